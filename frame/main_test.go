package frame

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// within reports whether sub lies inside b's bytes b[0:len(b)] (an empty sub
// with zero capacity counts as inside).
func within(sub, b []byte) bool {
	if cap(sub) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	s := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return s >= lo && s+uintptr(cap(sub)) <= lo+uintptr(len(b))
}

// rep returns n copies of byte c.
func rep(c byte, n int) string { return string(bytes.Repeat([]byte{c}, n)) }

// headerCases returns in with its header (first 4 bytes) as given, upper-cased
// and lower-cased, without duplicates: every golden row runs in both hex cases.
func headerCases(in string) []string {
	out := []string{in}
	if len(in) < HeaderSize {
		return out
	}
	for _, h := range []string{string(bytes.ToUpper([]byte(in[:4]))), string(bytes.ToLower([]byte(in[:4])))} {
		v := h + in[4:]
		dup := false
		for _, o := range out {
			dup = dup || o == v
		}
		if !dup {
			out = append(out, v)
		}
	}
	return out
}

// result is the outcome of feeding a whole stream to an Assembler.
type result struct {
	msgs     [][]byte // delivered messages, copied
	ends     []int64  // stream offset just past each message's terminator
	err      error    // the stream error, or Truncated's answer at EOF
	maxAsm   int      // the largest cap the assembler's buffer reached
	consumed int64
	direct   int64 // bytes read straight into the assembler (feedDirect)
	spilled  int64 // bytes Filled handed back (feedDirect)
}

// feed drives a like a network caller: it appends chunk bytes of in at a
// time (chunk <= 0: all at once) to its own buffer, calls Next until it asks
// for more, discards what Next consumed, and at the end asks Truncated. It
// checks the per-call invariants on the way.
func feed(t testing.TB, a *Assembler, in []byte, chunk int) result {
	t.Helper()
	if chunk <= 0 {
		chunk = len(in) + 1
	}
	var r result
	var pending []byte
	for i := 0; ; i += chunk {
		if i < len(in) {
			pending = append(pending, in[i:min(i+chunk, len(in))]...)
		}
		for {
			msg, n, done, err := a.Next(pending)
			r.maxAsm = max(r.maxAsm, cap(a.buf))
			if n < 0 || n > len(pending) {
				t.Fatalf("Next consumed %d of %d bytes", n, len(pending))
			}
			if err != nil {
				if n != 0 || done || msg != nil {
					t.Fatalf("error %v came with n=%d done=%v msg=%q", err, n, done, msg)
				}
				r.err = err
				return r
			}
			r.consumed += int64(n)
			if done {
				if !within(msg, pending[:n]) && !within(msg, a.buf[:cap(a.buf)]) {
					t.Fatalf("message aliases neither the input nor the assembler buffer")
				}
				r.msgs = append(r.msgs, bytes.Clone(msg))
				r.ends = append(r.ends, r.consumed)
				pending = pending[n:]
				continue
			}
			if msg != nil {
				t.Fatalf("need-more came with a message")
			}
			pending = pending[n:]
			if n == 0 {
				break
			}
		}
		if i >= len(in) {
			break
		}
	}
	r.err = a.Truncated(len(pending))
	return r
}

// feedDirect is feed for a caller that reads straight into the
// assembler's buffer whenever it holds no input and Plan offers pieces (up
// to packets foreseen packets): each read of up to chunk bytes fills the
// pieces first, then pending, and what Filled hands back goes to the front
// of pending.
func feedDirect(t testing.TB, a *Assembler, in []byte, chunk, packets int) result {
	t.Helper()
	if chunk <= 0 {
		chunk = len(in) + 1
	}
	var r result
	var pending []byte
	for {
		for { // until Next wants more input
			msg, n, done, err := a.Next(pending)
			r.maxAsm = max(r.maxAsm, cap(a.buf))
			if err != nil {
				r.err = err
				return r
			}
			r.consumed += int64(n)
			pending = pending[n:]
			if done {
				r.msgs = append(r.msgs, bytes.Clone(msg))
				r.ends = append(r.ends, r.consumed)
			} else if n == 0 {
				break
			}
		}
		if len(in) == 0 {
			break
		}
		k := min(chunk, len(in))
		if plan := a.Plan(packets); plan != nil && len(pending) == 0 {
			// A readv of k bytes into the pieces, then the caller's
			// buffer.
			got := 0
			for _, p := range plan {
				got += copy(p, in[got:k])
			}
			spill := a.Filled(got)
			placed := got - len(spill)
			r.consumed += int64(placed)
			r.direct += int64(placed)
			r.spilled += int64(len(spill))
			pending = append(append(pending, spill...), in[got:k]...)
		} else {
			pending = append(pending, in[:k]...)
		}
		in = in[k:]
	}
	r.err = a.Truncated(len(pending))
	return r
}

// loopReader replays b forever without allocating.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	if l.off == len(l.b) {
		l.off = 0
	}
	n := copy(p, l.b[l.off:])
	l.off += n
	return n, nil
}
