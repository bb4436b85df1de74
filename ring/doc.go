// Package ring is a single-producer, single-consumer message ring in shared
// memory: one process writes records in place, another reads them in place,
// and no byte crosses the kernel.
//
// # Memory
//
// Create makes a ring in a memfd sealed against shrinking and growing (and
// against further sealing), so that the peer cannot truncate the file under
// a mapping: an access beyond the end of a truncated file raises SIGBUS,
// from which a Go program cannot recover. The memfd travels to the peer by
// descriptor passing (package fdpass). NewWriter and NewReader map a ring
// file and take one side of it; they refuse a file that is not a memfd with
// those seals, whose size is not a header page plus a power-of-two data
// area, or whose header is not a ring's. The size comes from fstat, never
// from the header. The whole mapping is faulted in when it is made, so
// that the data path takes no page faults.
//
// The file holds a one-page header and the data area. The header keeps, each
// on its own cache line, the consumer's head (a byte position that only
// grows), one parking word per side and the sides' closed flags. A record
// is an eight-byte header (payload length, flags) and its payload, padded
// to eight bytes; a record never wraps around the end of the data area (a
// padding record fills the rest), so every payload is one contiguous slice
// of the mapping. A record of a mebibyte or more that begins a message and
// finds the ring empty goes back to the start of the data area the same
// way, so that a ring carrying large messages one at a time keeps using the
// same pages.
//
// Records publish themselves: the producer stores a record's header last,
// sealed with the lap of the record's position, and the consumer takes the
// record at its head once the header there carries that seal. There is no
// shared tail: a consumer that waits for a record looks at the cache line
// the record arrives in and finds its header there, rather than at an index
// the producer writes on every message and then at the record. Staged
// records (below) stay hidden behind the first one's header, which the
// producer keeps to itself until it publishes. After committing a record of
// a few cache lines or more, the producer asks for the lines its next record
// of that size would take, for writing and without waiting, so that they
// move to its cache while it does other things (waits for a reply) rather
// than one after another while it copies.
//
// # Trust
//
// The mapping is shared with a process that may be hostile or broken. Each
// side keeps its own position in a local variable and never reads it back
// from the mapping; the consumer's head and every record header are read
// once, with an atomic load, and checked before use. A value out of range,
// or a word at the head that no producer leaves there, ends the side with
// a *CorruptError; nothing the peer writes can make this
// package panic, read or write outside the mapping, or wait past a
// deadline. A payload leased from the mapping can still change under the
// reader while it looks at it: a reader that parses untrusted input copies
// it first (ReadMessage does).
//
// # Waiting
//
// A side that finds the ring empty (reader) or full (writer) spins for an
// adaptive while, then parks on a futex in the shared header. Parking is a
// Dekker handshake: the waiter raises its parking word and then looks again
// (the consumer at the header at its head, the producer at the head); the
// peer publishes (a header, or its head) and then reads the parking word,
// and only if it is raised clears it and wakes the waiter. A ring in
// steady traffic therefore makes no system calls at all, and a wake-up
// cannot be lost. Waits end at the side's deadline (SetDeadline) or when
// either side closes. The death of a peer process is not visible in the
// mapping: whoever owns the ring watches the connection it came on and
// calls Close, which wakes an owner parked on the futex at once. The futex
// word lies in shared memory, where a hostile peer could absorb a wake-up
// meant for this side, so a parked side also wakes once a second to look
// at its Close and deadline. An owner waiting on a doorbell (below) is not
// woken by Close: its own loop closes the side, or sees it closed.
//
// An owner with a poller of its own (Go's netpoller, an event loop) does
// not sleep in the futex for long: Spin spins without parking (SpinNext
// also takes the record it finds), Sleep sleeps on the futex for a
// bounded while (a peer that answers within it wakes the owner with one
// futex call, cheaper on both sides than a byte), and Arm asks the peer
// to ring a doorbell instead: a socket that the peer writes a byte to
// when it finds the side armed (Options.Doorbell), such as the connection
// the ring came on. An owner that serves many rings from one goroutine
// calls Arm on each side it serves, and when none is ready it waits on
// one Doorbell (NewDoorbell). Any number of rings can share a doorbell,
// and the doorbell reads end of file when the peer holding its other end
// has gone. A goroutine that watches many readers it holds (Reader.Hold)
// can instead sleep on all their futexes at once (Napper, where Linux
// has futex_waitv): the first record on any wakes it with the futex call
// that ring's own sleeper would have cost its peer.
//
// # Messages
//
// A message larger than a record (MaxRecord, half the data area less a
// header) streams through the ring as several records, each but the last
// flagged "more"; Write and ReadMessage do the splitting and joining, and
// Reserve/Commit and Next/Release give zero-copy access record by record.
// Small messages in bulk go faster as a batch: the writer lays records out
// in its own memory (AppendRecord) and StageRecords copies as many as fit
// into the ring at once; on the reading side ReleaseNext gives a record
// back and takes the next one in one step. Either way a record costs no
// atomic update of the mapping's reference count, which each call of
// Reserve, Stage, Next and Release makes.
//
// A record given back tells the writer that the reader is done with it
// (Writer.Taken reports whether every published record was, TakenTo
// whether every one before a position from Writer.Published); a reader
// that stops before acting on a record ends its lease with Drop, which
// gives nothing back.
//
// A writer may mark a record (Writer.Mark) and the reader sees the mark
// (Reader.Marked): one bit that the ring carries and its users give a
// meaning, such as a message that wants no answer.
//
// Each side is used by one goroutine at a time (its owner); Close and
// SetDeadline may be called from any goroutine.
//
// The package works on Linux, on 386, amd64, arm64, loong64, ppc64le and
// riscv64, where 64-bit atomics are lock-free and memory little-endian;
// elsewhere Create, NewWriter and NewReader return an error matching
// errors.ErrUnsupported.
package ring
