package fdpass

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reserve is the spare-slot trick of AnyEvent::FDpasser's "FULL
// DESCRIPTOR TABLES" section: spares (dups of one pipe read end that is
// never read) hold table slots and are closed just before each receive, so
// the descriptors arriving have room even when the application filled the
// table; then they are dup'ed again. If the re-dup fails the table is full:
// reading pauses (the kernel keeps the data) until a retry succeeds.
type reserve struct {
	orig   int
	want   int
	spares []int
	full   bool
}

func (r *reserve) init(n int) error {
	r.orig, r.want = -1, n
	if n == 0 {
		return nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("fdpass: reserve pipe: %w", err)
	}
	sysClose(p[1])
	r.orig = p[0]
	r.spares = make([]int, 0, n)
	if !r.restore() {
		r.close()
		return fmt.Errorf("fdpass: reserving %d spare descriptors: %w", n, unix.EMFILE)
	}
	return nil
}

func (r *reserve) release() {
	for _, fd := range r.spares {
		sysClose(fd)
	}
	r.spares = r.spares[:0]
}

// restore re-takes the spare slots; false means the table is full.
func (r *reserve) restore() bool {
	for len(r.spares) < r.want {
		fd, err := sysDup(r.orig)
		if err != nil {
			r.full = true
			return false
		}
		r.spares = append(r.spares, fd)
	}
	r.full = false
	return true
}

func (r *reserve) close() {
	r.release()
	if r.orig >= 0 {
		sysClose(r.orig)
		r.orig = -1
	}
}

// readerState belongs to the reader goroutine.
type readerState struct {
	buf   []byte
	ctrl  []byte
	msg   unix.Msghdr
	iov   unix.Iovec
	fds   []int
	dec   decoder
	ready []*inbound
	free  []*inbound // refilled by publish under p.mu
	res   reserve
	err   error // set by readFn: ends reading and fails the passer
	eof   bool  // set by readFn: the peer closed in an orderly way
	// Unclaimed room left at the last waitRoom; one wake-up of the reader
	// stops reading once it is spent, so the limits are overshot by at
	// most one receive.
	budgetFDs, budgetBytes int
	readFn                 func(uintptr) bool
}

// wentry is one sendmsg of a batch: segments segs[segOff:segOff+segN],
// iovecs iov[iovOff:iovOff+iovN], control ctrl[ctrlOff:ctrlOff+ctrlLen].
type wentry struct {
	segOff, segN     int
	iovOff, iovN     int
	ctrlOff, ctrlLen int
	length           int // bytes still to send
	nfds             int
}

// wseg is a run of bytes: scratch[off:off+n] when it is nil, else
// it.data[off:off+n].
type wseg struct {
	it     *item
	off, n int
}

// writerState belongs to the writer goroutine. Its slices are reused for
// every batch, so steady-state sends do not allocate.
type writerState struct {
	items    []*item
	last     []int // index of each item's last entry
	mm       []mmsghdr
	iov      []unix.Iovec
	ent      []wentry
	segs     []wseg
	scratch  []byte
	ctrl     []byte
	bfds     []int // descriptors of a bundle, concatenated
	next     int   // first entry not completely sent
	err      error
	progress bool
	timer    *time.Timer
	writeFn  func(uintptr) bool
}

func (p *Passer) platformInit() error {
	var sotype int
	var serr error
	sockfd := -1
	if err := p.rc.Control(func(fd uintptr) {
		sockfd = int(fd)
		sotype, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	}); err != nil {
		return fmt.Errorf("fdpass: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("fdpass: SO_TYPE: %w", serr)
	}
	if sotype != unix.SOCK_STREAM {
		return fmt.Errorf("%w: socket type %d, want a stream socket", ErrInvalid, sotype)
	}
	p.sockfd = sockfd
	if p.opts.maxUnclaimedFDs == 0 {
		n := DefaultMaxUnclaimedFDs
		var rl unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur/2 < uint64(n) {
			n = max(1, int(rl.Cur/2))
		}
		p.opts.maxUnclaimedFDs = n
	}
	r := &p.r
	r.buf = make([]byte, readBufferSize)
	r.ctrl = make([]byte, controlBufferSize)
	r.dec = decoder{
		raw:     p.opts.mode == Raw,
		maxFDs:  p.opts.maxFDsPerMessage,
		maxData: p.opts.maxMessageSize,
		closeFD: closeFD,
		emit:    p.emit,
		cur:     &inbound{},
	}
	r.readFn = p.readFn
	w := &p.w
	w.writeFn = p.writeFn
	w.timer = time.NewTimer(time.Hour)
	w.timer.Stop()
	return r.res.init(p.opts.reserveFDs)
}

// emit collects a message completed by the decoder and hands it a fresh
// one. Reader goroutine only.
func (p *Passer) emit(m *inbound) *inbound {
	r := &p.r
	r.ready = append(r.ready, m)
	if len(r.free) == 0 {
		p.mu.Lock()
		p.refillLocked()
		p.mu.Unlock()
	}
	if n := len(r.free); n > 0 {
		m := r.free[n-1]
		r.free = r.free[:n-1]
		return m
	}
	return &inbound{}
}

// readFn is called by RawConn.Read, which parks on the netpoller when it
// returns false. It runs up to maxReadsPerWake receives, each with the
// spare slots released, and feeds them to the decoder; completed messages
// are published together when the socket runs dry, so one wake-up of the
// reader and of a receiver serves many messages. It returns true when the
// loop must look at the state: an error, EOF, a full table, or the
// unclaimed budget spent.
func (p *Passer) readFn(fd uintptr) bool {
	r := &p.r
	for i := 0; i < maxReadsPerWake; i++ {
		r.res.release()
		var n int
		var err error
		for {
			r.iov.Base = &r.buf[0]
			r.iov.SetLen(len(r.buf))
			r.msg.Iov = &r.iov
			r.msg.SetIovlen(1)
			r.msg.Control = &r.ctrl[0]
			r.msg.SetControllen(len(r.ctrl))
			r.msg.Flags = 0
			n, err = sysRecvmsg(int(fd), &r.msg, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
			if err != unix.EINTR {
				break
			}
		}
		r.res.restore()
		if err == unix.EAGAIN {
			if len(r.ready) > 0 && p.flush() {
				return true
			}
			// Park on the netpoller, unless the spares could not be
			// re-taken: then the loop pauses on a timer instead.
			return r.res.full
		}
		if err != nil {
			r.err = opError("recvmsg", err)
			return true
		}
		if p.process(n) || r.res.full || r.budgetFDs <= 0 || r.budgetBytes <= 0 {
			return true
		}
	}
	return true
}

// process handles the result of one receive: control data, EOF, feeding
// the decoder. It returns true when reading must stop (r.err or r.eof set).
func (p *Passer) process(n int) bool {
	r := &p.r
	ctrlLen := min(int(r.msg.Controllen), len(r.ctrl))
	trunc := r.msg.Flags&unix.MSG_CTRUNC != 0
	var perr error
	r.fds, perr = parseControl(r.ctrl[:ctrlLen], r.fds[:0], closeFD)
	if perr != nil {
		closeFDs(r.fds)
		r.err = &ProtocolError{Offset: r.dec.pos, Reason: perr.Error()}
		return true
	}
	if n == 0 && len(r.fds) == 0 && !trunc {
		r.eof = true
		return true
	}
	p.stats.recvCalls.Add(1)
	p.stats.fdsReceived.Add(uint64(len(r.fds)))
	r.budgetFDs -= len(r.fds)
	r.budgetBytes -= n
	if err := r.dec.feed(r.buf[:n], r.fds, trunc); err != nil {
		r.err = err
		return true
	}
	return false
}

// flush publishes the messages completed so far. It returns true when
// the passer must stop reading (StrictTruncation met a truncated message,
// or the unclaimed limits are reached).
func (p *Passer) flush() bool {
	r := &p.r
	if p.opts.strictTruncation && r.err == nil {
		// A truncated message fails the passer: deliver what came before
		// it, drop it and the rest, let the loop fail (not from here: the
		// socket cannot be closed inside RawConn.Read).
		for i, m := range r.ready {
			if m.err != nil {
				r.err = m.err
				for _, x := range r.ready[i:] {
					closeFDs(x.fds)
				}
				clear(r.ready[i:])
				r.ready = r.ready[:i]
				break
			}
		}
	}
	over := p.publish(r.ready)
	clear(r.ready)
	r.ready = r.ready[:0]
	return over || r.err != nil
}

func (p *Passer) readLoop() {
	defer p.wg.Done()
	r := &p.r
	defer func() {
		r.dec.release()
		r.res.close()
		for _, m := range r.ready {
			closeFDs(m.fds)
		}
		r.ready = r.ready[:0]
	}()
	for {
		if r.res.full {
			if !p.waitTable() {
				return
			}
		}
		if !p.waitRoom() {
			return
		}
		if err := p.rc.Read(r.readFn); err != nil {
			p.fail(fmt.Errorf("fdpass: read: %w", err))
			return
		}
		if r.err != nil && !errors.Is(r.err, ErrTruncated) {
			// Messages completed by the reads that broke the protocol are
			// suspect: drop them with their descriptors.
			for _, m := range r.ready {
				closeFDs(m.fds)
			}
			clear(r.ready)
			r.ready = r.ready[:0]
		}
		if len(r.ready) > 0 {
			p.flush()
		}
		switch {
		case r.err != nil:
			p.opts.logger.Warn("fdpass: receive failed", "err", r.err)
			p.fail(r.err)
			return
		case r.eof:
			if err := r.dec.eof(); err != nil {
				p.fail(err)
			} else {
				p.setEOF()
			}
			return
		}
	}
}

// waitTable pauses reading while the descriptor table is full, retrying
// the reservation after 50 ms and then every 500 ms. False means the
// passer is done.
func (p *Passer) waitTable() bool {
	p.stats.full.Add(1)
	p.opts.logger.Warn("fdpass: descriptor table full; pausing receives")
	t := time.NewTimer(fullTableFirstRetry)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.done:
			return false
		}
		if p.r.res.restore() {
			return true
		}
		t.Reset(fullTableRetry)
	}
}

func (p *Passer) writeLoop() {
	defer p.wg.Done()
	w := &p.w
	for {
		p.mu.Lock()
		for p.sendq.len() == 0 && p.failErr == nil {
			p.mu.Unlock()
			select {
			case <-p.wakeW:
			case <-p.done:
			}
			p.mu.Lock()
		}
		if p.failErr != nil {
			err := p.failErr
			for p.sendq.len() > 0 {
				w.items = append(w.items, p.sendq.pop())
			}
			p.mu.Unlock()
			p.finishItems(w.items, err)
			clear(w.items)
			w.items = w.items[:0]
			return
		}
		p.takeBatchLocked()
		p.mu.Unlock()
		p.buildBatch()
		err := p.sendBatch()
		p.mu.Lock()
		for range w.items {
			p.sendq.pop()
		}
		p.mu.Unlock()
		if err != nil {
			p.fail(err)
			p.mu.Lock()
			err = p.failErr
			p.mu.Unlock()
			// Items whose every entry went out are in the kernel.
			k := 0
			for k < len(w.items) && w.last[k] < w.next {
				k++
			}
			p.finishItems(w.items[:k], nil)
			p.finishItems(w.items[k:], err)
		} else {
			p.finishItems(w.items, nil)
		}
		clear(w.items)
		w.items = w.items[:0]
	}
}

// takeBatchLocked selects the items of the next batch from the head of the
// queue (whole items, at least one) without removing them: only the writer
// pops, after sending.
func (p *Passer) takeBatchLocked() {
	w := &p.w
	entries, segs, bytes := 0, 0, 0
	for i := 0; i < p.sendq.len(); i++ {
		it := p.sendq.at(i)
		ne := 1
		if len(it.fds) > 0 {
			ne = it.chunks
		}
		ns := it.chunks + 1
		if len(w.items) > 0 && (entries+ne > maxBatchEntries || segs+ns > maxBatchIovecs || bytes+len(it.data) > maxBatchBytes) {
			break
		}
		w.items = append(w.items, it)
		entries += ne
		segs += ns
		bytes += len(it.data)
	}
}

// newEntry starts a sendmsg entry, with an SCM_RIGHTS message for fds
// when there are any.
func (w *writerState) newEntry(fds []int) {
	e := wentry{segOff: len(w.segs), nfds: len(fds)}
	if len(fds) > 0 {
		off := len(w.ctrl)
		space := unix.CmsgSpace(4 * len(fds))
		w.ctrl = append(w.ctrl, make([]byte, space)...)
		putRights(w.ctrl[off:], fds)
		e.ctrlOff, e.ctrlLen = off, space
	}
	w.ent = append(w.ent, e)
}

// addScratch appends b to the scratch buffer as part of the current
// entry, merging with the previous segment when contiguous.
func (w *writerState) addScratch(b []byte) {
	e := &w.ent[len(w.ent)-1]
	off := len(w.scratch)
	w.scratch = append(w.scratch, b...)
	e.length += len(b)
	if e.segN > 0 {
		s := &w.segs[len(w.segs)-1]
		if s.it == nil && s.off+s.n == off {
			s.n += len(b)
			return
		}
	}
	w.segs = append(w.segs, wseg{off: off, n: len(b)})
	e.segN++
}

func (w *writerState) addData(it *item) {
	e := &w.ent[len(w.ent)-1]
	w.segs = append(w.segs, wseg{it: it, n: len(it.data)})
	e.segN++
	e.length += len(it.data)
}

var rawPayload = [1]byte{rawByte}

// bundleRun returns the end of the run of items from i that can share one
// bundle: single-chunk messages with small data, at most 253 descriptors
// and maxBundleSend body bytes in all. It returns i when the run holds
// fewer than two messages with descriptors (no receive to save).
func (p *Passer) bundleRun(i int) int {
	if p.opts.noBundles {
		return i
	}
	items := p.w.items
	nfds, body, withFDs, end := 0, 0, 0, i
	for j := i; j < len(items); j++ {
		x := items[j]
		if x.chunks != 1 || len(x.data) > smallData ||
			nfds+len(x.fds) > MaxFDsPerSendmsg || body+headerSize+len(x.data) > maxBundleSend {
			break
		}
		nfds += len(x.fds)
		body += headerSize + len(x.data)
		if len(x.fds) > 0 {
			withFDs++
			end = j + 1 // trailing messages without descriptors stay outside
		}
	}
	if withFDs < 2 || len(items[i].fds) == 0 {
		return i
	}
	return end
}

// buildBatch lays out w.items as sendmmsg entries. Every chunk that
// carries descriptors starts its own entry, so its descriptors ride on its
// header's first byte (the kernel attaches SCM_RIGHTS to the first byte of
// a sendmsg); descriptor-less messages join the current entry.
func (p *Passer) buildBatch() {
	w := &p.w
	w.ent, w.segs, w.scratch, w.ctrl, w.last = w.ent[:0], w.segs[:0], w.scratch[:0], w.ctrl[:0], w.last[:0]
	raw := p.opts.mode == Raw
	var hdr [headerSize]byte
	for i := 0; i < len(w.items); i++ {
		it := w.items[i]
		if raw {
			w.newEntry(it.fds)
			w.addScratch(rawPayload[:])
			w.last = append(w.last, len(w.ent)-1)
			continue
		}
		if j := p.bundleRun(i); j-i >= 2 {
			// Several small messages share one sendmsg and one
			// SCM_RIGHTS: one receive takes them all.
			w.bfds = w.bfds[:0]
			body := 0
			for _, x := range w.items[i:j] {
				w.bfds = append(w.bfds, x.fds...)
				body += headerSize + len(x.data)
			}
			w.newEntry(w.bfds)
			putHeader(hdr[:], flagBundle, len(w.bfds), body)
			w.addScratch(hdr[:])
			for _, x := range w.items[i:j] {
				putHeader(hdr[:], 0, len(x.fds), len(x.data))
				w.addScratch(hdr[:])
				w.addScratch(x.data)
				w.last = append(w.last, len(w.ent)-1)
			}
			i = j - 1
			continue
		}
		for c := 0; c < it.chunks; c++ {
			lo := c * MaxFDsPerSendmsg
			hi := min(lo+MaxFDsPerSendmsg, len(it.fds))
			cfds := it.fds[lo:hi]
			if len(cfds) > 0 || len(w.ent) == 0 {
				w.newEntry(cfds)
			}
			var flags byte
			if c > 0 {
				flags |= flagCont
			}
			if c < it.chunks-1 {
				flags |= flagMore
			}
			dlen := 0
			if c == 0 {
				dlen = len(it.data)
			}
			putHeader(hdr[:], flags, len(cfds), dlen)
			w.addScratch(hdr[:])
			if dlen > 0 {
				if dlen <= smallData {
					w.addScratch(it.data)
				} else {
					w.addData(it)
				}
			}
		}
		w.last = append(w.last, len(w.ent)-1)
	}
	// Pointers last: the slices above may have moved while growing.
	w.iov = w.iov[:0]
	for i := range w.ent {
		e := &w.ent[i]
		e.iovOff = len(w.iov)
		for _, s := range w.segs[e.segOff : e.segOff+e.segN] {
			var v unix.Iovec
			if s.it == nil {
				v.Base = &w.scratch[s.off]
			} else {
				v.Base = &s.it.data[s.off]
			}
			v.SetLen(s.n)
			w.iov = append(w.iov, v)
		}
		e.iovN = len(w.iov) - e.iovOff
	}
	w.mm = w.mm[:0]
	for i := range w.ent {
		e := &w.ent[i]
		var m mmsghdr
		m.Hdr.Iov = &w.iov[e.iovOff]
		m.Hdr.SetIovlen(e.iovN)
		if e.ctrlLen > 0 {
			m.Hdr.Control = &w.ctrl[e.ctrlOff]
			m.Hdr.SetControllen(e.ctrlLen)
		}
		w.mm = append(w.mm, m)
	}
}

// sendBatch sends every entry of the batch, waiting on the netpoller when
// the socket is full and backing off on ETOOMANYREFS.
func (p *Passer) sendBatch() error {
	w := &p.w
	w.next = 0
	var stalled time.Time
	backoff := backpressureFirstRetry
	for w.next < len(w.ent) {
		w.err, w.progress = nil, false
		if err := p.rc.Write(w.writeFn); err != nil {
			return fmt.Errorf("fdpass: write: %w", err)
		}
		if w.progress {
			stalled, backoff = time.Time{}, backpressureFirstRetry
		}
		switch {
		case w.err == nil:
		case errors.Is(w.err, unix.ETOOMANYREFS):
			// Too many of our descriptors sit in messages the peer has not
			// received: the kernel counts them per user against the
			// sender's RLIMIT_NOFILE. The peer must drain; keep the batch
			// and retry.
			p.stats.backpressure.Add(1)
			if stalled.IsZero() {
				stalled = time.Now()
			} else if time.Since(stalled) > p.opts.backpressureTimeout {
				return fmt.Errorf("%w (waited %v)", ErrBackpressure, p.opts.backpressureTimeout)
			}
			w.timer.Reset(backoff)
			select {
			case <-w.timer.C:
			case <-p.done:
				w.timer.Stop()
				return ErrClosed
			}
			backoff = min(2*backoff, backpressureMaxRetry)
		default:
			return opError("sendmsg", w.err)
		}
	}
	return nil
}

// writeFn runs sendmmsg until the batch is sent or the socket is full. It
// is called by RawConn.Write, which parks on the netpoller when it returns
// false.
func (p *Passer) writeFn(fd uintptr) bool {
	w := &p.w
	for w.next < len(w.ent) {
		n, err := sysSendmmsg(int(fd), w.mm[w.next:], unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			w.err = err
			return true
		case n <= 0 || n > len(w.ent)-w.next:
			w.err = fmt.Errorf("sendmmsg returned %d for %d entries", n, len(w.ent)-w.next)
			return true
		}
		p.stats.sendCalls.Add(1)
		w.progress = true
		if !p.advance(n) {
			return true
		}
	}
	return true
}

// advance accounts for n entries that sendmmsg reports. Only the last may
// be short (on a stream socket sendmmsg stops after an entry it sent in
// part, and counts that entry); its rest is sent next time without its
// control data, which already went with its first byte: descriptors must
// never be sent twice.
func (p *Passer) advance(n int) bool {
	w := &p.w
	for k := 0; k < n; k++ {
		e := w.next
		ent := &w.ent[e]
		if ent.ctrlLen > 0 {
			p.stats.fdsSent.Add(uint64(ent.nfds))
		}
		sent := int(w.mm[e].Len)
		if sent < ent.length {
			if k != n-1 {
				w.err = fmt.Errorf("sendmmsg reported a short entry %d before the last of %d", k, n)
				return false
			}
			w.trim(e, sent)
			return true
		}
		p.stats.sendEntries.Add(1)
		w.next++
	}
	return true
}

// trim drops the first sent bytes of entry e and its control data.
func (w *writerState) trim(e, sent int) {
	ent := &w.ent[e]
	ent.length -= sent
	for sent > 0 {
		v := &w.iov[ent.iovOff]
		if l := int(v.Len); sent >= l {
			sent -= l
			ent.iovOff++
			ent.iovN--
			continue
		}
		v.Base = (*byte)(unsafe.Add(unsafe.Pointer(v.Base), sent))
		v.SetLen(int(v.Len) - sent)
		sent = 0
	}
	h := &w.mm[e].Hdr
	h.Iov = &w.iov[ent.iovOff]
	h.SetIovlen(ent.iovN)
	h.Control = nil
	h.SetControllen(0)
	ent.ctrlLen = 0
}

// opError wraps a failed socket call, naming what the peer did where the
// error says it: closed its end (EPIPE) or reset the connection.
func opError(op string, err error) error {
	oe := &net.OpError{Op: op, Net: "unix", Err: err}
	switch {
	case errors.Is(err, unix.EPIPE):
		return fmt.Errorf("%w: %w", ErrPeerClosed, oe)
	case errors.Is(err, unix.ECONNRESET):
		return fmt.Errorf("%w: %w", ErrPeerReset, oe)
	}
	return oe
}
