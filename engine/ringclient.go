package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/ring"
)

// The Client's side of ring connections (rings.go has the protocol). Only
// the owner goroutine runs these, except closeRings, which runs under mu.

// ringHandshake offers the ring handshake on the new connection and, if
// the server grants it, maps the rings it sent. It reports whether the
// connection now runs on rings; false with a nil error means the server
// declined (refused, at its cap, or git's, which does not know it) and
// closes the connection. ctx bounds it.
func (c *Client) ringHandshake(ctx context.Context) (bool, error) {
	defer c.boundBy(ctx)()
	hello := strconv.AppendInt(append([]byte(nil), ringHelloPrefix...), int64(c.opts.rings), 10)
	if c.opts.inPlace {
		hello = append(hello, ringInPlace...)
	}
	if err := c.write(hello); err != nil {
		return false, ctxOr(ctx, err)
	}
	msg, fds, err := c.readHandshakeReply()
	defer closeFDs(fds)
	if err != nil {
		return false, ctxOr(ctx, err)
	}
	if string(msg) != string(ringOKReply) && string(msg) != string(ringOKPlain) {
		return false, nil
	}
	if len(fds) != 2 {
		return false, fmt.Errorf("engine: ring handshake carried %d descriptors, not 2", len(fds))
	}
	if err := c.mapRings(fds); err != nil {
		return false, err
	}
	c.roneway = string(msg) == string(ringOKReply)
	c.applyDeadline()
	return true, nil
}

// readHandshakeReply reads the handshake's reply and the descriptors that
// came with it. The descriptors are the caller's to close, also on error.
func (c *Client) readHandshakeReply() (msg []byte, fds []int, err error) {
	c.asm.Reset()
	for {
		if c.rend == len(c.rbuf) {
			return nil, fds, errors.New("engine: ring handshake reply too long")
		}
		n, got, err := readWithRights(c.uc, c.rbuf[c.rend:])
		fds = append(fds, got...)
		if err != nil {
			return nil, fds, err
		}
		if n == 0 {
			return nil, fds, c.asm.Truncated(c.rend - c.rstart)
		}
		c.rend += n
		m, used, done, err := c.asm.Next(c.rbuf[c.rstart:c.rend])
		if err != nil {
			return nil, fds, err
		}
		c.rstart += used
		if done {
			// Nothing follows the reply before the client arms a ring:
			// whatever did is dropped.
			c.rstart, c.rend = 0, 0
			return m, fds, nil
		}
	}
}

// mapRings maps the request ring (fds[0], written here) and the reply ring
// (fds[1], read here); the descriptors stay the caller's.
func (c *Client) mapRings(fds []int) error {
	opts, err := ringOptions(c.uc, c.opts.ringSpin)
	if err != nil {
		return err
	}
	defer opts.Doorbell.Close()
	reqF := os.NewFile(uintptr(fds[0]), "request ring")
	repF := os.NewFile(uintptr(fds[1]), "reply ring")
	fds[0], fds[1] = -1, -1
	defer reqF.Close()
	defer repF.Close()
	out, err := ring.NewWriter(reqF, opts)
	if err != nil {
		return err
	}
	in, err := ring.NewReader(repF, opts)
	if err != nil {
		_ = out.Close()
		return err
	}
	// Deadlines in the past: Next and Reserve never sleep in the ring,
	// where a server could keep them; every wait is on the socket.
	out.SetDeadline(time.Unix(1, 0))
	in.SetDeadline(time.Unix(1, 0))
	c.mu.Lock()
	if c.closed.Load() {
		// Close ran during the handshake and found no rings to close.
		c.mu.Unlock()
		_ = out.Close()
		_ = in.Close()
		return ErrClientClosed
	}
	c.rout, c.rin = out, in
	c.rcounted = true
	ringClients.Add(1)
	if c.rwait.wake == nil {
		c.rwait.wake = make(chan struct{}, 1)
	}
	c.rwait.r = in
	c.mu.Unlock()
	c.rchunk = max(out.MaxRecord()/2, 1)
	c.rstaged, c.rpostStaged, c.rpostEnd = 0, false, 0
	c.halfProcs = int32(max(1, runtime.GOMAXPROCS(0)/2))
	c.watchOK = c.opts.ringSpin > 0 && runtime.GOMAXPROCS(0) > 1 // see Server's watchOK
	return nil
}

// closeRingsLocked closes the rings of the open connection and forgets
// them; the owner calls it, under mu.
//
// A reply returned in place keeps its ring mapped (rleased) until the next
// Recv or Close, even after its connection is gone.
func (c *Client) closeRingsLocked() {
	c.interruptRingsLocked()
	c.rout, c.rin = nil, nil
}

// interruptRingsLocked closes the rings for Close, which may run while the
// owner is in a call: the owner keeps its pointers (a ring's calls fail
// once it is closed, and it is unmapped after the last call returns) and
// forgets them when it drops the connection. Under mu.
func (c *Client) interruptRingsLocked() {
	if c.rout != nil {
		_ = c.rout.Close()
		_ = c.rin.Close()
	}
	if c.rcounted {
		c.rcounted = false
		ringClients.Add(-1)
	}
}

// writeRing sends req as one message of the request ring: one record when
// it fits one (the server then hands it to its handler in place), else
// records of rchunk bytes, so that the server can drain one while the next
// is written.
func (c *Client) writeRing(req []byte) error {
	if len(c.rbatch) > 0 { // posted before req: they go first
		if err := c.sendBatch(); err != nil {
			return err
		}
	}
	chunk := c.rchunk
	if len(req) <= c.rout.MaxRecord() {
		chunk = len(req)
	}
	for off, stale := 0, 0; ; {
		n := min(len(req)-off, chunk)
		if err := c.waitRingRoom(n); err != nil {
			return err
		}
		dst, err := c.rout.Reserve(n)
		if err == ring.ErrTimeout && stale < ringStaleLimit {
			stale++
			continue // the room Arm saw is gone (see nextReply); nothing was reserved
		}
		if err == ring.ErrTimeout {
			return errRingStale
		}
		if err != nil {
			return err
		}
		copyMessage(dst, req[off:off+n], &ringClients)
		if c.rmark {
			c.rout.Mark()
		}
		off += n
		if off == len(req) && c.rstage && c.rstaged+n < c.ringBatch() {
			// Queue: the record waits for the rest of the batch.
			c.rstaged += n + 8
			if err := c.rout.Stage(n, false); err != nil {
				return err
			}
			return nil
		}
		c.rstaged = 0 // Commit publishes the staged records too
		if err := c.rout.Commit(n, off < len(req)); err != nil {
			return err
		}
		c.postsPublished()
		if off == len(req) {
			return nil
		}
	}
}

// ringBatch is how many bytes of staged requests and posted messages make
// a batch on rings: clientBatchBytes, or a record of the request ring if
// that is less.
func (c *Client) ringBatch() int { return min(clientBatchBytes, c.rout.MaxRecord()) }

// readRingReply reads the next reply message from the reply ring into the
// Client's reply buffer, so that the server cannot change it once it is
// returned; or, with WithRingRepliesInPlace, returns a reply of one record
// where it lies, and keeps its lease until the next Recv or Close (see
// rlease; Recv gave back the previous one).
func (c *Client) readRingReply() ([]byte, error) {
	if cap(c.rgather) > clientKeep {
		c.rgather = nil
	}
	buf := c.rgather[:0]
	for first := true; ; first = false {
		p, more, err := c.nextReply()
		if err != nil {
			if err == io.EOF && !first {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if first && !more && c.opts.inPlace && len(p) <= c.opts.maxReply {
			c.rleased = c.rin
			c.rlease.Store(leaseHeld)
			if c.closed.Load() {
				c.giveBackReply() // or Close does (see rlease)
				return nil, ErrClientClosed
			}
			return p, nil
		}
		if len(buf)+len(p) > c.opts.maxReply {
			c.rin.Release()
			return nil, &frame.Error{Err: frame.ErrTooLarge, Length: len(buf) + len(p)}
		}
		buf = append(buf, p...)
		c.rin.Release()
		if !more {
			c.rgather = buf
			return buf, nil
		}
	}
}

// The states of Client.rlease.
const (
	leaseNone int32 = iota
	leaseHeld
	leaseClosed
)

// giveBackReply gives back the record of the reply last returned in
// place, if any. It reports false when Close has taken it (Close gives it
// back): the rings are then Close's to unmap, and the owner, which sees
// closed, must not call them.
func (c *Client) giveBackReply() bool {
	switch c.rlease.Load() {
	case leaseNone:
		return true
	case leaseHeld:
		if c.rlease.CompareAndSwap(leaseHeld, leaseNone) {
			r := c.rleased
			c.rleased = nil
			r.Release() // unmaps its ring if its connection is gone
			return true
		}
	}
	return false
}

// nextReply waits for the next record of the reply ring and takes it (or
// the one the wait's spin took, rtaken). The ring's deadline lies in the
// past, so Next never sleeps in the ring: when it finds nothing after all
// (a server that changed its mind between Arm and Next), it reports
// ErrTimeout, and the wait goes back to the socket.
func (c *Client) nextReply() ([]byte, bool, error) {
	for stale := 0; ; stale++ {
		if err := c.waitRingReply(); err != nil {
			return nil, false, err
		}
		if c.rhasTaken {
			p, more := c.rtaken, c.rtakenMore
			c.rtaken, c.rhasTaken = nil, false
			return p, more, nil
		}
		p, more, err := c.rin.Next()
		if err != ring.ErrTimeout {
			return p, more, err
		}
		if stale == ringStaleLimit {
			return nil, false, errRingStale
		}
	}
}

// waitRingReply waits until the reply ring has a record (or an error) to
// give: a spin within the process's budget, a short sleep on the ring's
// futex within the sleepers' budget (rings.go), then the socket. A spin
// that ends with a record takes it (rtaken, for nextReply): the spin's
// hold on the mapping becomes the lease.
func (c *Client) waitRingReply() error {
	spinMax := c.ringSpinMax()
	w := clientWaits.enter(c.watchOK, spinMax) // a spin's place, where it may spin
	defer w.leave()
	if w.crowd && c.watchOK {
		// Other Clients of the process wait too: one watch for all.
		// (The count is of every Client's waits, on rings or not.)
		if c.rin.Ready() { // a record there already (the next of a reply, say)
			return nil
		}
		c.rwait.cut.Store(false) // before the deadline is read: a later SetDeadline sets it
		if clientRings.wait(&c.rwait, c.currentDeadline()) {
			if c.rwait.ready || c.rin.Ready() {
				return nil
			}
			return c.waitReplyArmed()
		}
		w.takeSpin(spinMax) // the watch refused: as any wait
	}
	if w.spin {
		p, more, ok := c.rin.SpinNext()
		if ok {
			c.rtaken, c.rtakenMore, c.rhasTaken = p, more, true
			return nil
		}
		w.unspin()
	}
	if d := c.ringSleepFor(clientWaits.waits()); d > 0 {
		ok := c.rin.Sleep(d)
		ringSleepers.Add(-1)
		if ok {
			return nil
		}
	}
	return c.waitReplyArmed()
}

// clientRings is the watch (ringWatch) of the process's Clients on rings
// whose replies are slow to come in a crowd of waits.
var clientRings = ringWatch{idle: DefaultClientRingSpin, procs: true}

// waitReplyArmed waits on the socket until the reply ring has a record
// (or an error) to give.
func (c *Client) waitReplyArmed() error {
	for !c.rin.Arm() {
		if err := c.waitBell(); err != nil {
			return err
		}
	}
	return nil
}

// waitBell waits for a doorbell byte on the socket, or for a slice of
// time (ringSlices): a wake-up that never comes, from a server that
// clears the parking word without ringing, costs a slice, not the
// deadline. The Client's deadline still ends the wait.
func (c *Client) waitBell() error {
	// The socket's deadline is set under mu, as SetDeadline sets it: a
	// SetDeadline from another goroutine comes before (and is read here)
	// or after (and moves the wait's end itself), never in between, where
	// this wait would overwrite it with a slice computed from the old one.
	c.mu.Lock()
	limit := time.Now().Add(c.slices.next())
	if own := c.deadline; !own.IsZero() && own.Before(limit) {
		limit = own
	}
	_ = c.uc.SetReadDeadline(limit)
	c.mu.Unlock()
	_, err := c.uc.Read(c.rbell[:])
	c.mu.Lock()
	own := c.deadline
	_ = c.uc.SetReadDeadline(own)
	c.mu.Unlock()
	if err == nil {
		c.slices.reset()
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && (own.IsZero() || time.Now().Before(own)) && !c.closed.Load() {
		return nil // a slice ended: look at the ring again
	}
	return err
}

// waitRingRoom waits until the request ring has room for n bytes.
func (c *Client) waitRingRoom(n int) error {
	if c.rout.Ready(n) { // not Arm: a spin that finds room would leave the doorbell armed
		return nil
	}
	if clientWaits.trySpin(c.ringSpinMax(), ringSpinCrowd*c.ringSpinMax()) {
		ok := c.rout.Spin(n)
		clientWaits.unspin()
		if ok {
			return nil
		}
	}
	if d := c.ringSleepFor(clientWaits.waits() + 1); d > 0 {
		ok := c.rout.Sleep(n, d)
		ringSleepers.Add(-1)
		if ok {
			return nil
		}
	}
	for !c.rout.Arm(n) {
		if err := c.waitBell(); err != nil {
			return err
		}
	}
	return nil
}

// ringSpinMax is how many of the process's Clients may spin at once
// (clientspin.go): 0 when this one does not spin.
func (c *Client) ringSpinMax() int32 {
	if c.opts.ringSpin <= 0 {
		return 0
	}
	if budget := spinLimit.Load(); budget > 0 {
		return budget
	}
	return c.halfProcs
}

// ringSleepFor takes a place among the process's ring sleepers, for a
// wait while waits waits of the process's Clients are under way, and
// returns how long to sleep: ringSleep, or less where the Client's
// deadline comes sooner. Zero: no place, or the deadline has passed;
// otherwise the caller gives the place back with ringSleepers.Add(-1).
func (c *Client) ringSleepFor(waits int32) time.Duration {
	d := ringSleep
	if dl := c.currentDeadline(); !dl.IsZero() {
		if d = min(d, time.Until(dl)); d <= 0 {
			return 0
		}
	}
	if !ringSleepSlot(c.halfProcs, waits) {
		return 0
	}
	return d
}

// publishRing moves the messages Post laid out (rbatch) into the request
// ring and publishes them with the requests Queue staged there, if any:
// one publishing store, and one wake-up at most, for all of them. An
// error comes from the ring (the connection is gone); the caller ends the
// connection.
func (c *Client) publishRing() error {
	if c.rout == nil {
		return nil
	}
	if len(c.rbatch) > 0 {
		if err := c.sendBatch(); err != nil {
			return err
		}
	}
	if c.rstaged > 0 {
		c.rout.Flush()
		c.rstaged = 0
		c.postsPublished()
	}
	return nil
}

// sendBatch stages the messages Post laid out (rbatch) in the request
// ring, waiting for room as writeRing does, and empties the batch. When
// the ring refuses them, the batch stays as it was if none of it entered
// the ring (the caller may send it on a new connection: flushPosts); the
// rest of a batch cut short is lost with the connection, as a posted
// message the server has not taken is.
func (c *Client) sendBatch() error {
	b := c.rbatch
	for len(b) > 0 {
		n, err := c.rout.StageRecords(b)
		b = b[n:]
		c.rstaged += n
		if n > 0 {
			c.posted(true)
		}
		if err == nil && len(b) > 0 {
			err = c.waitRingRoom(int(binary.LittleEndian.Uint32(b))) // the next record's payload
		}
		if err != nil {
			if len(b) < len(c.rbatch) {
				c.rbatch = c.rbatch[:0]
			}
			return err
		}
	}
	c.rbatch = c.rbatch[:0]
	return nil
}
