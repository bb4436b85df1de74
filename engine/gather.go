package engine

import "github.com/pktipc/pktipc/frame"

// gatherMin is the smallest payload written from where it lies (writev,
// with the packet headers beside it) rather than copied behind its
// headers: below it the copy costs less than the extra iovecs.
const gatherMin = 32 << 10

// gather lays out one write of encoded bytes followed by a payload that
// stays where it is: the payload's pkt-line headers are made in hdr and
// the pieces listed in parts, head first. Its buffers are reused, so a
// steady stream of large writes allocates nothing. Only its owner (a
// Client's goroutine, or an event loop) uses it.
type gather struct {
	hdr   []byte
	parts [][]byte
	next  int // the first part not wholly written
	off   int // bytes of parts[next] written
}

// set lays out head, then payload as data packets, then a flush when
// flush is set. The slices must stay unchanged until the write is done.
func (g *gather) set(head, payload []byte, flush bool) {
	npkt := (len(payload) + frame.MaxPayloadSize - 1) / frame.MaxPayloadSize
	g.hdr = g.hdr[:0]
	for i := range npkt {
		n := min(len(payload)-i*frame.MaxPayloadSize, frame.MaxPayloadSize)
		g.hdr, _ = frame.AppendHeader(g.hdr, n) // n is within a packet
	}
	if flush {
		g.hdr = frame.AppendFlush(g.hdr)
	}
	g.parts = g.parts[:0]
	if len(head) > 0 {
		g.parts = append(g.parts, head)
	}
	for i := range npkt {
		p := payload[i*frame.MaxPayloadSize:]
		g.parts = append(g.parts, g.hdr[i*frame.HeaderSize:(i+1)*frame.HeaderSize], p[:min(len(p), frame.MaxPayloadSize)])
	}
	if flush {
		g.parts = append(g.parts, g.hdr[npkt*frame.HeaderSize:])
	}
	g.next, g.off = 0, 0
}

// advance records n more bytes written.
func (g *gather) advance(n int) {
	for n > 0 && g.next < len(g.parts) {
		k := min(n, len(g.parts[g.next])-g.off)
		g.off += k
		n -= k
		if g.off == len(g.parts[g.next]) {
			g.next++
			g.off = 0
		}
	}
}

// done reports whether every part is written.
func (g *gather) done() bool { return g.next == len(g.parts) }

// rest calls f with each piece not yet written, in order.
func (g *gather) rest(f func([]byte)) {
	for i := g.next; i < len(g.parts); i++ {
		p := g.parts[i]
		if i == g.next {
			p = p[g.off:]
		}
		f(p)
	}
}

// release drops the references to the caller's slices.
func (g *gather) release() {
	clear(g.parts)
	g.parts = g.parts[:0]
}

// planSpan returns how many bytes the pieces of a frame.Assembler.Plan
// hold, and how many of them Filled may hand back at most (all but the rest
// of the packet under way, a header's worth more for a plan that starts
// with a header): the room a reader keeps in front of its own buffer.
func planSpan(plan [][]byte) (planned, room int) {
	for _, p := range plan {
		planned += len(p)
	}
	return planned, planned - len(plan[0]) + frame.HeaderSize
}

// planPackets is n where readv reads into many pieces at once, else 0:
// a plain read fills one piece, so reading a packet's header on its own
// would cost a system call per packet.
func planPackets(n int) int {
	if writevSupported {
		return n
	}
	return 0
}
