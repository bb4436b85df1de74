// Package frame is pktipc's codec layer: git's pkt-line format as git's
// simple-ipc uses it, and the two LibIPC wire formats.
//
// Everything decodes in place. [Decode] looks at the start of a caller's
// buffer and answers with the packet's [Kind], its payload as a subslice of
// that buffer, and the number of bytes consumed; "not enough bytes yet" is the
// distinct answer [NeedMore] with nothing consumed and nothing allocated, so a
// caller can decode straight out of a network read buffer. Header parsing
// follows git exactly: four hex digits of either case, 0003 and values above
// 65520 rejected as soon as the four header bytes are present, typed errors
// ([*Error]) carrying the offending header and its stream offset.
//
// An [Assembler] turns packets into messages: data packets are concatenated
// until a zero-length packet ([SimpleIPC], git's reader) or until a flush
// ([Persistent], pktipc's multi-request connections). A message that sits in
// one data packet is handed out as a subslice of the caller's buffer; only
// messages split over several packets are copied, once, into the assembler's
// own reusable buffer. A total-size cap is enforced from the headers, before
// any memory is grown.
//
// Encoding appends into a caller's buffer ([AppendMessage], [AppendData],
// [AppendPacket]) or produces a header alone ([AppendHeader]) so that a
// payload can go out uncopied with writev. Writers never emit 0004 and never
// a packet longer than 65520 bytes; hex is always lowercase.
//
// [Reader] and [Writer] wrap an io.Reader or io.Writer for blocking clients;
// they reuse one buffer each, so what they return is valid only until the next
// call.
//
// [DecodeLibIPC] and [AppendLibIPC] handle the current LibIPC frame (a 4-byte
// big-endian length and the payload); [DecodeLibIPCC] and [AppendLibIPCC] the
// old LibIPC C frame (type, length, user type). They follow the same
// in-place contract.
//
// The package uses only the standard library. Nothing in it starts goroutines;
// the stateless functions are safe for concurrent use, and each stateful value
// ([Assembler], [Reader], [Writer]) belongs to one goroutine at a time.
package frame
