package fdpass

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeTable stands in for the kernel's descriptor table: it hands out
// numbers and fails on a close of an unknown or already closed one.
type fakeTable struct {
	next int
	open map[int]bool
	err  error
}

func newFakeTable() *fakeTable { return &fakeTable{next: 1000, open: map[int]bool{}} }

func (f *fakeTable) alloc() int {
	f.next++
	f.open[f.next] = true
	return f.next
}

func (f *fakeTable) close(fd int) {
	if !f.open[fd] && f.err == nil {
		f.err = fmt.Errorf("close of descriptor %d, which is not open", fd)
	}
	delete(f.open, fd)
}

// check fails unless every descriptor was closed exactly once.
func (f *fakeTable) check(t *testing.T) {
	t.Helper()
	if f.err != nil {
		t.Fatal(f.err)
	}
	if len(f.open) != 0 {
		t.Fatalf("%d descriptors neither handed out nor closed: %v", len(f.open), f.open)
	}
}

func appendCmsg(b []byte, level, typ int32, data []byte) []byte {
	off := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(len(data)))...)
	h := b[off:]
	if unix.SizeofCmsghdr == 16 {
		binary.NativeEndian.PutUint64(h, uint64(unix.CmsgLen(len(data))))
	} else {
		binary.NativeEndian.PutUint32(h, uint32(unix.CmsgLen(len(data))))
	}
	binary.NativeEndian.PutUint32(h[unix.SizeofCmsghdr-8:], uint32(level))
	binary.NativeEndian.PutUint32(h[unix.SizeofCmsghdr-4:], uint32(typ))
	copy(h[unix.CmsgLen(0):], data)
	return b
}

// FuzzCmsg: parseControl on arbitrary bytes never panics nor
// returns more descriptors than fit; on control data built from a layout
// every descriptor in a complete SCM_RIGHTS or SCM_PIDFD message is handed
// out or closed exactly once, whatever the cut (the returned length).
func FuzzCmsg(f *testing.F) {
	f.Add([]byte{}, []byte{0x01, 3}, uint16(0xffff))
	f.Add([]byte{20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0}, []byte{0x11, 2, 0x02, 1, 0x03, 0}, uint16(40))
	f.Add(bytes.Repeat([]byte{0xff}, 40), []byte{0x04, 5, 0x01, 253}, uint16(100))
	f.Fuzz(func(t *testing.T, raw, layout []byte, cut uint16) {
		ft := newFakeTable()
		fds, _ := parseControl(raw, nil, ft.close)
		if len(fds) > len(raw)/4 {
			t.Fatalf("%d descriptors from %d bytes", len(fds), len(raw))
		}

		ft = newFakeTable()
		var ctrl []byte
		type placed struct {
			end int
			fds []int
		}
		var all []placed
		for i := 0; i+1 < len(layout) && len(all) < 16; i += 2 {
			n := int(layout[i+1]) % (MaxFDsPerSendmsg + 1)
			switch layout[i] % 4 {
			case 0, 1: // SCM_RIGHTS or SCM_PIDFD with n descriptors
				typ := int32(unix.SCM_RIGHTS)
				if layout[i]%4 == 1 {
					typ, n = unix.SCM_PIDFD, 1
				}
				data := make([]byte, 4*n)
				var ps []int
				for k := 0; k < n; k++ {
					fd := ft.alloc()
					ps = append(ps, fd)
					binary.NativeEndian.PutUint32(data[4*k:], uint32(fd))
				}
				ctrl = appendCmsg(ctrl, unix.SOL_SOCKET, typ, data)
				all = append(all, placed{end: len(ctrl) - unix.CmsgSpace(len(data)) + unix.CmsgLen(len(data)), fds: ps})
			case 2:
				ctrl = appendCmsg(ctrl, unix.SOL_SOCKET, unix.SCM_CREDENTIALS, make([]byte, 12))
			case 3:
				ctrl = appendCmsg(ctrl, int32(layout[i+1]), 1, make([]byte, n%16))
			}
		}
		limit := min(int(cut), len(ctrl))
		fds, err := parseControl(ctrl[:limit], nil, ft.close)
		for _, fd := range fds {
			ft.close(fd) // the caller's part: close or hand out what it got
		}
		if ft.err != nil {
			t.Fatal(ft.err)
		}
		// Descriptors of messages entirely inside the cut must be done
		// with; beyond the cut the kernel never returns partial messages,
		// so those are only checked for not being closed twice.
		for _, p := range all {
			if p.end <= limit && err == nil {
				for _, fd := range p.fds {
					if ft.open[fd] {
						t.Fatalf("descriptor %d inside the returned control data was lost", fd)
					}
				}
			}
		}
		if limit == len(ctrl) {
			if err != nil {
				t.Fatalf("well-formed control data: %v", err)
			}
			ft.check(t)
		}
	})
}

// testMessage is one message of a generated framed stream; bundle asks
// to share a bundle with the following messages that ask the same.
type testMessage struct {
	data   []byte
	nfds   int
	bundle bool
}

// wireRange is one sendmsg: bytes [start, end) with nfds on its first byte.
type wireRange struct{ start, end, nfds int }

// encodeStream is an independent encoder of PROTOCOL.md: every chunk with
// descriptors, and every bundle, starts its own sendmsg; others join the
// current one.
func encodeStream(msgs []testMessage) ([]byte, []wireRange) {
	var b []byte
	var ranges []wireRange
	startRange := func(n int) {
		if len(ranges) > 0 {
			ranges[len(ranges)-1].end = len(b)
		}
		ranges = append(ranges, wireRange{start: len(b), nfds: n})
	}
	var h [headerSize]byte
	for i := 0; i < len(msgs); i++ {
		// A bundle: a run of single-chunk messages marked bundle, with
		// 1..253 descriptors in all.
		j, total, body := i, 0, 0
		for j < len(msgs) && msgs[j].bundle && msgs[j].nfds <= MaxFDsPerSendmsg && total+msgs[j].nfds <= MaxFDsPerSendmsg {
			total += msgs[j].nfds
			body += headerSize + len(msgs[j].data)
			j++
		}
		if j > i && total > 0 {
			startRange(total)
			putHeader(h[:], flagBundle, total, body)
			b = append(b, h[:]...)
			for _, m := range msgs[i:j] {
				putHeader(h[:], 0, m.nfds, len(m.data))
				b = append(b, h[:]...)
				b = append(b, m.data...)
			}
			i = j - 1
			continue
		}
		m := msgs[i]
		chunks := chunkCount(m.nfds)
		left := m.nfds
		for c := 0; c < chunks; c++ {
			n := min(left, MaxFDsPerSendmsg)
			left -= n
			if n > 0 || len(ranges) == 0 {
				startRange(n)
			}
			var flags byte
			if c > 0 {
				flags |= flagCont
			}
			if c < chunks-1 {
				flags |= flagMore
			}
			dlen := 0
			if c == 0 {
				dlen = len(m.data)
			}
			putHeader(h[:], flags, n, dlen)
			b = append(b, h[:]...)
			if c == 0 {
				b = append(b, m.data...)
			}
		}
	}
	if len(ranges) > 0 {
		ranges[len(ranges)-1].end = len(b)
	}
	return b, ranges
}

// FuzzFrameFDs: the framed decoder, fed a generated stream split into
// reads the way the kernel may split it (a receive that picked up
// descriptors stops at the end of their range; one that fills its buffer
// first may run on into the next range and take its descriptors), returns
// exactly the
// messages sent; fed corrupted streams and arbitrary descriptor placement
// it never panics, and every descriptor ends handed out or closed exactly
// once.
func FuzzFrameFDs(f *testing.F) {
	f.Add([]byte{1, 3, 0, 2, 5, 0}, []byte{8, 1, 200}, uint16(0), byte(0), false)
	f.Add([]byte{0x41, 3, 0x40, 0, 0x45, 2, 0x40, 9, 1, 1}, []byte{5, 2, 250}, uint16(0), byte(0), false)
	f.Add([]byte{0x41, 3, 0x40, 0, 0x45, 2}, []byte{200}, uint16(12), byte(0x04), false)
	f.Add([]byte{0, 0, 255, 1, 7, 3}, []byte{3}, uint16(9), byte(0x55), false)
	f.Add([]byte{0xfd, 0x10, 0, 1, 0, 0, 0, 0}, []byte{1, 1, 1}, uint16(0), byte(0), true)
	f.Add([]byte{0, 0, 0}, []byte{1}, uint16(0), byte(0), true)
	f.Fuzz(func(t *testing.T, spec, reads []byte, flipAt uint16, flip byte, rawMode bool) {
		ft := newFakeTable()
		var got []*inbound
		d := decoder{
			raw:     rawMode,
			maxFDs:  600,
			maxData: 1 << 12,
			closeFD: ft.close,
			cur:     &inbound{},
		}
		d.emit = func(m *inbound) *inbound {
			got = append(got, m)
			return &inbound{}
		}
		readSize := func(i int) int {
			if len(reads) == 0 {
				return 64
			}
			return 1 + int(reads[i%len(reads)])
		}

		if rawMode {
			// Arbitrary bytes with arbitrary descriptor counts per read.
			var err error
			for i, pos := 0, 0; pos < len(spec) && err == nil; i++ {
				n := min(readSize(i)%4, len(spec)-pos)
				var fds []int
				for k := 0; k < int(readSize(i+1))%3; k++ {
					fds = append(fds, ft.alloc())
				}
				err = d.feed(spec[pos:pos+n], fds, readSize(i+2)%7 == 0)
				pos += n
			}
			if err == nil {
				d.eof()
			}
			d.release()
			for _, m := range got {
				if m.err == nil && len(m.fds) != 1 {
					t.Fatalf("raw message with %d descriptors", len(m.fds))
				}
				for _, fd := range m.fds {
					ft.close(fd)
				}
			}
			ft.check(t)
			return
		}

		// Messages from spec: (data length, descriptor count) pairs.
		var msgs []testMessage
		for i := 0; i+1 < len(spec) && len(msgs) < 32; i += 2 {
			n := int(spec[i+1])
			if spec[i]&0x80 != 0 {
				n += 256 // exercise continuation chunks
			}
			data := bytes.Repeat([]byte{byte(i)}, int(spec[i]&0x3f)*3)
			msgs = append(msgs, testMessage{data: data, nfds: n, bundle: spec[i]&0x40 != 0})
		}
		stream, ranges := encodeStream(msgs)
		fdsOf := make([][]int, len(ranges))
		var sent []int
		for i, r := range ranges {
			for k := 0; k < r.nfds; k++ {
				fd := ft.alloc()
				fdsOf[i] = append(fdsOf[i], fd)
				sent = append(sent, fd)
			}
		}
		corrupt := flip != 0 && int(flipAt) < len(stream)
		if corrupt {
			stream[flipAt] ^= flip
		}
		// Reads as the kernel makes them: a read that reaches the start
		// of a descriptor-carrying range collects its descriptors and
		// stops at that range's end.
		var err error
		ri := 0
		for i, pos := 0, 0; pos < len(stream) && err == nil; i++ {
			end := min(pos+readSize(i), len(stream))
			var fds []int
			for ri < len(ranges) && ranges[ri].end <= pos {
				ri++
			}
			for j := ri; j < len(ranges) && ranges[j].start < end; j++ {
				if ranges[j].start >= pos && ranges[j].nfds > 0 {
					fds = fdsOf[j]
					fdsOf[j] = nil
					end = min(end, ranges[j].end)
					break
				}
			}
			err = d.feed(stream[pos:end], fds, false)
			pos = end
		}
		if err == nil {
			err = d.eof()
		}
		d.release()
		for _, rest := range fdsOf {
			for _, fd := range rest {
				ft.close(fd) // never fed because decoding stopped early
			}
		}
		if !corrupt {
			if err != nil {
				t.Fatalf("valid stream: %v", err)
			}
			if len(got) != len(msgs) {
				t.Fatalf("decoded %d messages, sent %d", len(got), len(msgs))
			}
			k := 0
			for i, m := range got {
				if m.err != nil || !bytes.Equal(m.data, msgs[i].data) || len(m.fds) != msgs[i].nfds {
					t.Fatalf("message %d: %d bytes, %d fds, %v; want %d bytes, %d fds", i, len(m.data), len(m.fds), m.err, len(msgs[i].data), msgs[i].nfds)
				}
				for _, fd := range m.fds {
					if fd != sent[k] {
						t.Fatalf("message %d: descriptors out of order", i)
					}
					k++
				}
			}
		} else if err != nil && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("corrupt stream: untyped error %v", err)
		}
		for _, m := range got {
			if len(m.fds) > d.maxFDs || len(m.data) > d.maxData {
				t.Fatalf("message over the limits: %d fds, %d bytes", len(m.fds), len(m.data))
			}
			for _, fd := range m.fds {
				ft.close(fd)
			}
		}
		ft.check(t)
	})
}

// TestHeaderBytes pins the example of PROTOCOL.md.
func TestHeaderBytes(t *testing.T) {
	got := append(header(0, 2, 2), "hi"...)
	want := []byte{0xFD, 0x10, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 'h', 'i'}
	if !bytes.Equal(got, want) {
		t.Fatalf("% x, want % x", got, want)
	}
	if chunkCount(0) != 1 || chunkCount(253) != 1 || chunkCount(254) != 2 || chunkCount(1000) != 4 {
		t.Fatal("chunkCount")
	}
}

// TestDecoderPendingBounded: a peer that keeps one descriptor group
// pending across every read (each header straddles two reads) does not
// make the decoder's pending storage grow.
func TestDecoderPendingBounded(t *testing.T) {
	ft := newFakeTable()
	n := 0
	d := decoder{maxFDs: 10, maxData: 10, closeFD: ft.close, cur: &inbound{}}
	d.emit = func(m *inbound) *inbound {
		n++
		for _, fd := range m.fds {
			ft.close(fd)
		}
		return &inbound{}
	}
	h := header(0, 1, 0)
	if err := d.feed(h[:1], []int{ft.alloc()}, false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if err := d.feed(append(append([]byte{}, h[1:]...), h[0]), []int{ft.alloc()}, false); err != nil {
			t.Fatal(err)
		}
		if len(d.pend) > 1 {
			t.Fatalf("pending storage grew to %d", len(d.pend))
		}
	}
	if err := d.feed(h[1:], nil, false); err != nil {
		t.Fatal(err)
	}
	if err := d.eof(); err != nil || n != 1001 {
		t.Fatalf("%d messages, %v", n, err)
	}
	ft.check(t)
}
