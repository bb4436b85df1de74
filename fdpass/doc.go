// Package fdpass passes file descriptors between processes over Unix
// stream sockets (SCM_RIGHTS): filesystem monitors handing out watched
// files, supervisors handing listeners to their successors, a shared-memory
// ring handing over its memfd.
//
// # The Passer
//
// A Passer owns one connected Unix stream socket and is its only reader and
// writer: the kernel silently closes descriptors that a plain read(2) runs
// over, so descriptors never travel on a socket that anything else reads
// (in particular not on a gnet-read message socket). Build one with New on
// a *net.UnixConn, Pair for a socketpair, Listen/Dial on a path, or
// StartChild/FromEnv to hand one end of a socketpair to a process started
// with os/exec. Each Passer runs three goroutines (reader, writer,
// callback dispatcher) that park on Go's netpoller; Close joins them.
//
// # Sending
//
// SendFDs (ints, allocation-free) and Send (*os.File) queue a message and
// never block. The queue keeps order and is bounded (MaxQueue,
// ErrQueueFull). The writer coalesces queued messages into as few
// syscalls as possible: one sendmmsg carries up to 64 sendmsg entries, an
// entry carries up to 253 descriptors (the kernel's SCM_MAX_FD; 254 gives
// EINVAL), runs of small messages with descriptors are bundled into one
// entry (so one recvmsg receives them all), descriptor-less messages share
// an entry, and larger messages are split into continuation chunks. Msghdr, iovec and control storage
// is reused, so steady-state sending does not allocate. A short write is
// completed without re-sending the control data, which already went with
// the first byte. ETOOMANYREFS (too many descriptors in flight for the
// sender's RLIMIT_NOFILE) is back-pressure: the batch stays queued and is
// retried until BackpressureTimeout.
//
// Each message's completion (a callback, or a channel with SendChan) fires
// exactly once, in queue order, on the writer goroutine: with nil once
// sendmsg has put the whole message in the kernel, which does not mean
// the peer has received it, or with the error that ended the passer. By
// default the passer owns sent descriptors and closes them after sending
// (the kernel keeps the files alive while in flight); with KeepOpen the
// caller keeps them and must keep them open until the completion.
//
// # Receiving
//
// Receivers are served in the order they asked: blocking RecvInto/Recv
// (with a deadline) and one-shot RecvFunc callbacks share one queue; an
// OnRecv handler takes the messages nobody waits for. Every receive is a
// recvmsg with MSG_CMSG_CLOEXEC (received descriptors are close-on-exec)
// and a 1088-byte control buffer; every control message is parsed without
// trusting cmsg_len beyond the returned length, and descriptors of any
// type not handed out (SCM_PIDFD) are closed. RecvInto reuses the
// caller's Message and does not allocate.
//
// Ownership of received data: a Message returned by Recv or filled by
// RecvInto belongs to the caller, slices and descriptors alike. A
// callback's Message is valid only until the callback returns; its
// descriptors are the callback's to close or keep.
//
// # Full descriptor tables
//
// Receiving a descriptor creates one, so a receiver at RLIMIT_NOFILE
// could lose it. The passer keeps a spare descriptor (a dup of a pipe end,
// ReserveFDs, default 1) that it closes just before each receive and
// re-takes after it; if re-taking fails the table is full and reading
// pauses (50 ms, then every 500 ms) with the data left in the kernel, so
// nothing is lost. The reserve covers one receive: Raw mode receives one
// descriptor at a time, so it never loses one; in Framed mode a message or
// bundle with more descriptors than the reserve can meet a full table
// (senders that need the guarantee per message use NoBundles, receivers
// raise ReserveFDs). When more arrive than fit, the kernel sets
// MSG_CTRUNC: the passer closes what did arrive and fails the messages
// that lost descriptors with a *TruncatedError carrying the declared and
// delivered counts; the byte stream stays aligned and the passer continues
// (or fails, with StrictTruncation). Another goroutine opening a file
// between the release and the receive can still take the slot; MSG_CTRUNC
// is the final detector. Reading also pauses while MaxUnclaimedFDs or
// MaxUnclaimedBytes of received data wait for receivers (the kernel keeps
// the rest, and the sender meets ETOOMANYREFS or a full socket), and
// descriptors left unclaimed longer than MaxUnclaimedAge fail the passer.
//
// # Modes and wire format
//
// Framed (the default) sends messages of opaque bytes plus a declared
// descriptor count, so the receiver knows exactly which descriptors belong
// to which message; PROTOCOL.md describes the bytes. The receiver accepts
// descriptors only where a header declares them: a count that does not
// match, or descriptors on any other byte, is a *ProtocolError and the
// passer fails (the peer is lying or broken).
//
// Raw speaks the shape of AnyEvent::FDpasser, IO::FDPass and LibIPC-C:
// one 0x00 byte carrying exactly one descriptor per sendmsg, and nothing
// else. A raw Passer sends those one-byte messages batched in sendmmsg
// (wire-identical, fewer syscalls) and receives each descriptor as a
// Message without data. A byte without a descriptor, or with several, is a
// protocol error where FDpasser would hand out descriptor 1.
//
// Differences from AnyEvent::FDpasser: on failure or Close every queued
// and unclaimed descriptor is closed and every pending sender and receiver
// gets the error (FDpasser drops pending receivers silently); received
// descriptors are close-on-exec; the path helper never unlinks a path it
// did not bind.
//
// # Things the kernel shares
//
// A passed descriptor refers to the same open file description as the
// sender's: O_NONBLOCK, the file offset and the status flags are shared,
// so changing blocking mode on a received descriptor changes it for the
// sender too. Send reads descriptors through SyscallConn and never calls
// (*os.File).Fd, which would switch the file to blocking mode.
//
// # Errors
//
// Errors match the sentinels of errors.go with errors.Is: ErrClosed (also
// net.ErrClosed), ErrQueueFull, ErrProtocol (*ProtocolError),
// ErrTruncated (*TruncatedError), ErrTooLarge, ErrBackpressure,
// ErrSelfPass, ErrUnclaimed, ErrRawData, ErrInvalid, ErrPeerClosed (a
// send to a peer that closed its end), ErrPeerReset; deadlines give
// os.ErrDeadlineExceeded, the peer's orderly close io.EOF and a close
// inside a message io.ErrUnexpectedEOF. Platforms other than Linux return
// errors.ErrUnsupported from every constructor.
package fdpass
