package fdpass

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Framed wire format (PROTOCOL.md has the byte diagram). A message is one
// or more chunks; each chunk starts with an 8-byte header whose first byte
// carries that chunk's descriptors:
//
//	byte 0     magic 0xFD
//	byte 1     version (high nibble, 1) | flags (low nibble)
//	bytes 2-3  descriptors on this chunk, big-endian, 0..253
//	bytes 4-7  data bytes following this header, big-endian
const (
	headerSize    = 8
	headerMagic   = 0xFD
	headerVersion = 1

	// flagMore: another chunk of the same message follows.
	flagMore = 0x01
	// flagCont: this chunk continues the previous one; it carries 1..253
	// descriptors and no data.
	flagCont = 0x02
	// flagBundle: this chunk's data is a run of whole single-chunk
	// messages sharing this chunk's descriptors, handed out in order by
	// their declared counts.
	flagBundle = 0x04
	flagsMask  = flagMore | flagCont | flagBundle

	// maxBundleBody bounds the body of a received bundle; senders stay
	// far below it (maxBundleSend).
	maxBundleBody = 64 << 10
	// maxBundleSend bounds the body of a bundle this package sends.
	maxBundleSend = 16 << 10

	// rawByte is the one data byte of the FDpasser shape.
	rawByte = 0x00
)

// putHeader writes one chunk header into b[:headerSize].
func putHeader(b []byte, flags byte, nfds, dlen int) {
	b[0] = headerMagic
	b[1] = headerVersion<<4 | flags
	binary.BigEndian.PutUint16(b[2:4], uint16(nfds))
	binary.BigEndian.PutUint32(b[4:8], uint32(dlen))
}

// chunkCount is the number of chunks a framed message with nfds
// descriptors needs.
func chunkCount(nfds int) int {
	if nfds <= MaxFDsPerSendmsg {
		return 1
	}
	return (nfds + MaxFDsPerSendmsg - 1) / MaxFDsPerSendmsg
}

// inbound is one received message: under construction by the decoder, or
// queued for a receiver. Its slices are reused when the slot is recycled.
type inbound struct {
	data []byte
	fds  []int
	err  error // per-message error (*TruncatedError); its fds are closed
	at   int64 // monotonic nanoseconds when queued, for MaxUnclaimedAge
}

func (m *inbound) reset() {
	m.data = m.data[:0]
	m.fds = m.fds[:0]
	m.err = nil
}

// fdGroup records the descriptors that one receive brought, and the stream
// range [start, end) of the bytes of that receive. The kernel hangs a
// sendmsg's descriptors on its first byte and stops a receive right after
// the range that carried them, so the group must be claimed by exactly one
// chunk header whose first byte lies inside [start, end).
type fdGroup struct {
	start, end uint64
	off, n     int // descriptors in decoder.pend[off:off+n]
	trunc      bool
}

const (
	stHeader = iota
	stData
)

// decoder turns the bytes and descriptors of successive receives into
// messages. It owns every descriptor fed to it until it hands it out in an
// emitted message or closes it with closeFD. Not safe for concurrent use.
type decoder struct {
	raw     bool
	maxFDs  int
	maxData int
	closeFD func(fd int)
	// emit receives a completed message and returns an empty one to fill
	// next.
	emit func(m *inbound) *inbound

	pos      uint64 // stream offset of the next byte fed
	state    int
	hdr      [headerSize]byte
	hdrN     int
	hdrStart uint64
	dataLeft int
	more     bool // a continuation chunk must follow
	want     int  // descriptors declared so far by the current message
	got      int  // descriptors arrived so far for the current message
	trunc    bool // the current message lost descriptors (MSG_CTRUNC)
	// The bundle being parsed: its descriptors bfds[bfdOff:] not yet
	// handed out, bwant declared descriptors not yet claimed by its
	// messages, bundleLeft body bytes not yet covered by a message.
	inBundle   bool
	bundleLeft int
	bfds       []int
	bfdOff     int
	bwant      int
	cur        *inbound
	groups     ring[fdGroup]
	pend       []int
	err        error // sticky: set on the first protocol error
}

func (d *decoder) closeAll(fds []int) {
	for _, fd := range fds {
		d.closeFD(fd)
	}
}

// fail records a protocol error and closes every descriptor the decoder
// still owns.
func (d *decoder) fail(err error) error {
	if d.err == nil {
		d.err = err
	}
	d.release()
	return d.err
}

// release closes every descriptor held: unclaimed groups and the message
// under construction. Used on failure and at shutdown.
func (d *decoder) release() {
	for d.groups.len() > 0 {
		g := d.groups.pop()
		d.closeAll(d.pend[g.off : g.off+g.n])
	}
	d.pend = d.pend[:0]
	d.closeAll(d.bfds[d.bfdOff:])
	d.bfds, d.bfdOff = d.bfds[:0], 0
	if d.cur != nil {
		d.closeAll(d.cur.fds)
		d.cur.fds = d.cur.fds[:0]
	}
}

func (d *decoder) protoErr(off uint64, want, got int, format string, args ...any) error {
	return d.fail(&ProtocolError{Offset: off, Reason: fmt.Sprintf(format, args...), Want: want, Got: got})
}

// feed consumes the bytes and descriptors of one receive. trunc reports
// MSG_CTRUNC. The decoder takes ownership of fds whatever it returns.
// It returns the first protocol error, after which every later feed closes
// what it is given and returns the same error.
func (d *decoder) feed(p []byte, fds []int, trunc bool) error {
	if d.err != nil {
		d.closeAll(fds)
		return d.err
	}
	if d.raw {
		return d.feedRaw(p, fds, trunc)
	}
	start := d.pos
	end := start + uint64(len(p))
	if len(fds) > 0 || trunc {
		if d.groups.len() >= maxPendingGroups {
			d.closeAll(fds)
			return d.protoErr(start, 0, len(fds), "descriptors arrived on %d receives without a header to claim them", d.groups.len()+1)
		}
		off := len(d.pend)
		d.pend = append(d.pend, fds...)
		d.groups.push(fdGroup{start: start, end: end, off: off, n: len(fds), trunc: trunc})
	}
	for i := 0; i < len(p); {
		switch d.state {
		case stHeader:
			if d.hdrN == 0 {
				d.hdrStart = start + uint64(i)
			}
			c := copy(d.hdr[d.hdrN:], p[i:])
			d.hdrN += c
			i += c
			if d.hdr[0] != headerMagic {
				// Fail on the first byte: a raw FDpasser peer sends one
				// byte per message and would otherwise stall us.
				return d.badMagic()
			}
			if d.hdrN < headerSize {
				continue
			}
			d.hdrN = 0
			if err := d.header(); err != nil {
				return err
			}
		case stData:
			c := min(d.dataLeft, len(p)-i)
			d.cur.data = append(d.cur.data, p[i:i+c]...)
			i += c
			d.dataLeft -= c
			if d.dataLeft == 0 {
				if err := d.chunkDone(); err != nil {
					return err
				}
			}
		}
	}
	d.pos = end
	// A group whose whole range has been parsed without a header claiming
	// it carried descriptors on bytes where none may ride (only a message's
	// first byte, or a declared continuation, may carry them).
	resolved := d.pos
	if d.hdrN > 0 {
		resolved = d.hdrStart
	}
	if err := d.checkUnclaimed(resolved); err != nil {
		return err
	}
	d.compactPend()
	return nil
}

// compactPend moves the descriptors of pending groups to the front of
// pend, so a peer that keeps a group pending across reads cannot make it
// grow.
func (d *decoder) compactPend() {
	if d.groups.len() == 0 {
		d.pend = d.pend[:0]
		return
	}
	base := d.groups.peek().off
	if base == 0 {
		return
	}
	n := copy(d.pend, d.pend[base:])
	d.pend = d.pend[:n]
	for i := 0; i < d.groups.len(); i++ {
		d.groups.buf[(d.groups.head+i)&(len(d.groups.buf)-1)].off -= base
	}
}

// checkUnclaimed fails on any group that ends at or before offset.
func (d *decoder) checkUnclaimed(offset uint64) error {
	if d.groups.len() > 0 && d.groups.peek().end <= offset {
		g := d.groups.peek()
		return d.protoErr(g.start, 0, g.n, "descriptors arrived on bytes [%d, %d) where no header declares any", g.start, g.end)
	}
	return nil
}

func (d *decoder) badMagic() error {
	if d.hdr[0] == rawByte {
		return d.protoErr(d.hdrStart, 0, 0, "bad magic 0x00 (the peer speaks the raw FDpasser shape; use WithMode(Raw))")
	}
	return d.protoErr(d.hdrStart, 0, 0, "bad magic 0x%02x", d.hdr[0])
}

func (d *decoder) header() error {
	h := d.hdrStart
	b := d.hdr[:]
	if v := b[1] >> 4; v != headerVersion {
		return d.protoErr(h, 0, 0, "unsupported version %d", v)
	}
	flags := b[1] & 0x0f
	if flags&^flagsMask != 0 {
		return d.protoErr(h, 0, 0, "unknown flags 0x%x", flags)
	}
	nfds := int(binary.BigEndian.Uint16(b[2:4]))
	dlen := uint64(binary.BigEndian.Uint32(b[4:8]))
	cont := flags&flagCont != 0
	if nfds > MaxFDsPerSendmsg {
		return d.protoErr(h, nfds, 0, "chunk declares %d descriptors, more than the kernel's %d", nfds, MaxFDsPerSendmsg)
	}
	if d.inBundle {
		return d.innerHeader(h, flags, nfds, dlen)
	}
	if flags&flagBundle != 0 {
		return d.bundleHeader(h, flags, nfds, dlen)
	}
	switch {
	case cont && !d.more:
		return d.protoErr(h, 0, 0, "continuation chunk without a message to continue")
	case !cont && d.more:
		return d.protoErr(h, 0, 0, "message start where a continuation chunk was announced")
	case cont && dlen != 0:
		return d.protoErr(h, 0, 0, "continuation chunk carries %d data bytes", dlen)
	case (cont || flags&flagMore != 0) && nfds == 0:
		return d.protoErr(h, 0, 0, "split message chunk without descriptors")
	}
	if !cont {
		if dlen > uint64(d.maxData) {
			return d.protoErr(h, 0, 0, "message of %d data bytes exceeds the limit of %d", dlen, d.maxData)
		}
		d.cur.reset()
		d.want, d.got, d.trunc = 0, 0, false
	}
	if d.want+nfds > d.maxFDs {
		return d.protoErr(h, d.want+nfds, 0, "message declares more than the limit of %d descriptors", d.maxFDs)
	}
	if nfds > 0 {
		gfds, trunc, err := d.claim(h, nfds)
		if err != nil {
			return err
		}
		if trunc {
			// MSG_CTRUNC: the kernel installed what fit (the receiver's
			// table was full, or a security module refused some) and
			// closed the rest; close what arrived, keep the stream (it is
			// still aligned).
			d.closeAll(gfds)
			d.trunc = true
		} else {
			d.cur.fds = append(d.cur.fds, gfds...)
		}
		d.want += nfds
		d.got += len(gfds)
	} else if err := d.checkUnclaimed(h); err != nil {
		return err
	}
	d.more = flags&flagMore != 0
	return d.startData(dlen)
}

// claim takes the descriptors of the receive that read the header at h,
// which declares nfds of them. On a count mismatch it closes them and
// fails: the peer is lying about its own message. trunc reports fewer than
// declared, which MSG_CTRUNC explains (the kernel installs what fits, in
// order); the caller decides what to close.
func (d *decoder) claim(h uint64, nfds int) (fds []int, trunc bool, err error) {
	if err := d.checkUnclaimed(h); err != nil {
		return nil, false, err
	}
	if d.groups.len() == 0 || d.groups.peek().start > h {
		// The receive that read this header's first byte brought no
		// descriptors and no truncation flag: a count mismatch.
		return nil, false, d.protoErr(h, nfds, 0, "header declares descriptors that did not arrive with it")
	}
	g := d.groups.pop()
	gfds := d.pend[g.off : g.off+g.n]
	// MSG_CTRUNC explains fewer descriptors than declared, never more.
	if g.n > nfds || (g.n < nfds && !g.trunc) {
		d.closeAll(gfds)
		return nil, false, d.protoErr(h, nfds, g.n, "descriptor count does not match the header")
	}
	return gfds, g.n < nfds, nil
}

// bundleHeader starts a bundle: it claims the descriptors of all the
// bundle's messages at once.
func (d *decoder) bundleHeader(h uint64, flags byte, nfds int, dlen uint64) error {
	switch {
	case d.more:
		return d.protoErr(h, 0, 0, "bundle where a continuation chunk was announced")
	case flags != flagBundle:
		return d.protoErr(h, 0, 0, "bundle with flags 0x%x", flags)
	case nfds == 0:
		return d.protoErr(h, 0, 0, "bundle without descriptors")
	case dlen < headerSize || dlen > maxBundleBody:
		return d.protoErr(h, 0, 0, "bundle body of %d bytes (want %d to %d)", dlen, headerSize, maxBundleBody)
	}
	gfds, _, err := d.claim(h, nfds)
	if err != nil {
		return err
	}
	// Truncated or not, the kernel installed gfds in order: the bundle's
	// first messages get theirs and the rest are reported truncated.
	d.bfds = append(d.bfds[:0], gfds...)
	d.bfdOff, d.bwant = 0, nfds
	d.inBundle, d.bundleLeft = true, int(dlen)
	d.state = stHeader
	return nil
}

// innerHeader parses the header of one message inside a bundle.
func (d *decoder) innerHeader(h uint64, flags byte, nfds int, dlen uint64) error {
	switch {
	case flags != 0:
		return d.protoErr(h, 0, 0, "bundled message with flags 0x%x", flags)
	case uint64(headerSize)+dlen > uint64(d.bundleLeft):
		return d.protoErr(h, 0, 0, "bundled message of %d data bytes overruns its bundle", dlen)
	case dlen > uint64(d.maxData):
		return d.protoErr(h, 0, 0, "message of %d data bytes exceeds the limit of %d", dlen, d.maxData)
	case nfds > d.maxFDs:
		return d.protoErr(h, nfds, 0, "message declares more than the limit of %d descriptors", d.maxFDs)
	case nfds > d.bwant:
		return d.protoErr(h, nfds, d.bwant, "bundled messages declare more descriptors than their bundle")
	}
	if err := d.checkUnclaimed(h); err != nil {
		return err
	}
	d.bundleLeft -= headerSize + int(dlen)
	d.cur.reset()
	take := min(nfds, len(d.bfds)-d.bfdOff)
	d.cur.fds = append(d.cur.fds, d.bfds[d.bfdOff:d.bfdOff+take]...)
	d.bfdOff += take
	d.bwant -= nfds
	d.want, d.got, d.trunc = nfds, take, take < nfds
	d.more = false
	return d.startData(dlen)
}

func (d *decoder) startData(dlen uint64) error {
	d.dataLeft = int(dlen)
	if dlen > 0 {
		d.state = stData
		return nil
	}
	return d.chunkDone()
}

func (d *decoder) chunkDone() error {
	d.state = stHeader
	if d.more {
		return nil
	}
	if d.trunc {
		d.closeAll(d.cur.fds)
		d.cur.fds = d.cur.fds[:0]
		d.cur.err = &TruncatedError{Want: d.want, Got: d.got}
	}
	d.cur = d.emit(d.cur)
	d.cur.reset()
	if d.inBundle && d.bundleLeft == 0 {
		d.inBundle = false
		if d.bwant != 0 {
			return d.protoErr(d.pos, d.bwant, 0, "bundle declared %d descriptors its messages did not claim", d.bwant)
		}
		d.bfds, d.bfdOff = d.bfds[:0], 0
	}
	return nil
}

// feedRaw handles the FDpasser shape: every receive must be exactly one
// byte carrying exactly one descriptor. (A receive that picks up
// descriptors stops after their range, so a correct peer is seen one byte
// at a time; bytes without a descriptor are glued to the next range.)
func (d *decoder) feedRaw(p []byte, fds []int, trunc bool) error {
	off := d.pos
	d.pos += uint64(len(p))
	switch {
	case len(p) != 1:
		d.closeAll(fds)
		return d.protoErr(off, len(p), len(fds), "raw mode: %d bytes in one receive; each byte must carry its own descriptor", len(p))
	case p[0] != rawByte:
		d.closeAll(fds)
		return d.protoErr(off, 0, 0, "raw mode: byte 0x%02x where 0x00 was expected", p[0])
	case trunc:
		d.closeAll(fds)
		d.cur.reset()
		d.cur.err = &TruncatedError{Want: 1, Got: len(fds)}
	case len(fds) != 1:
		d.closeAll(fds)
		return d.protoErr(off, 1, len(fds), "raw mode: a byte must carry exactly one descriptor")
	default:
		d.cur.reset()
		d.cur.fds = append(d.cur.fds, fds[0])
	}
	d.cur = d.emit(d.cur)
	d.cur.reset()
	return nil
}

// eof checks that the stream ended at a message boundary with nothing
// pending; otherwise it closes what it holds and returns the error.
func (d *decoder) eof() error {
	if d.err != nil {
		return d.err
	}
	if d.hdrN > 0 || d.state == stData || d.more || d.inBundle {
		d.release()
		d.err = fmt.Errorf("fdpass: peer closed inside a message at stream offset %d: %w", d.pos, io.ErrUnexpectedEOF)
		return d.err
	}
	if d.groups.len() > 0 {
		return d.checkUnclaimed(d.pos)
	}
	return nil
}
