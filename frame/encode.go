package frame

import (
	"fmt"
	"slices"
)

// hexDigits are the header digits; writers always emit lowercase, as git does.
const hexDigits = "0123456789abcdef"

// putHeader writes the 4-digit header for total packet length v into h.
func putHeader(h []byte, v int) {
	_ = h[3]
	h[0] = hexDigits[v>>12&0xf]
	h[1] = hexDigits[v>>8&0xf]
	h[2] = hexDigits[v>>4&0xf]
	h[3] = hexDigits[v&0xf]
}

// EncodedLen returns how many bytes AppendMessage adds for a message of
// msgLen bytes: ceil(msgLen/65516) packets of header plus payload, and the
// closing flush. A negative msgLen counts as 0.
func EncodedLen(msgLen int) int {
	if msgLen <= 0 {
		return HeaderSize
	}
	packets := (msgLen + MaxPayloadSize - 1) / MaxPayloadSize
	return msgLen + packets*HeaderSize + HeaderSize
}

// dataLen is EncodedLen without the flush.
func dataLen(n int) int {
	if n <= 0 {
		return 0
	}
	return n + (n+MaxPayloadSize-1)/MaxPayloadSize*HeaderSize
}

// AppendMessage appends msg as one simple-ipc message: data packets of at most
// 65516 payload bytes, in order, then a flush (0000). An empty message is just
// 0000; 0004 is never written, because git's reader would end the message
// there. It grows dst at most once and does not allocate when dst has room
// for EncodedLen(len(msg)) more bytes. Safe for concurrent use on distinct
// buffers.
func AppendMessage(dst, msg []byte) []byte {
	dst = slices.Grow(dst, EncodedLen(len(msg)))
	return AppendFlush(appendData(dst, msg))
}

// AppendData appends msg as data packets only, without the flush, for a
// message written in several pieces (git's reply callback shape); the caller
// ends the message with AppendFlush. An empty msg appends nothing. Safe for
// concurrent use on distinct buffers.
func AppendData(dst, msg []byte) []byte {
	return appendData(slices.Grow(dst, dataLen(len(msg))), msg)
}

func appendData(dst, msg []byte) []byte {
	for len(msg) > 0 {
		chunk := min(len(msg), MaxPayloadSize)
		at := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		putHeader(dst[at:], chunk+HeaderSize)
		dst = append(dst, msg[:chunk]...)
		msg = msg[chunk:]
	}
	return dst
}

// AppendPacket appends exactly one packet carrying payload. An empty payload
// becomes 0004, an empty data packet: use it only where the reader expects one
// (never inside a simple-ipc message, where it ends the message). A payload
// over 65516 bytes is refused with an error wrapping ErrTooLong, and dst is
// returned unchanged.
func AppendPacket(dst, payload []byte) ([]byte, error) {
	dst, err := AppendHeader(dst, len(payload))
	if err != nil {
		return dst, err
	}
	return append(dst, payload...), nil
}

// AppendHeader appends only the 4-byte header of a data packet whose payload
// is payloadLen bytes, so that the payload can follow as a separate writev
// iovec without a copy. payloadLen must be 0..65516: larger values wrap
// ErrTooLong and negative ones ErrBadLength, and dst is returned unchanged.
func AppendHeader(dst []byte, payloadLen int) ([]byte, error) {
	switch {
	case payloadLen > MaxPayloadSize:
		return dst, fmt.Errorf("%w: payload of %d bytes, at most %d fit a packet", ErrTooLong, payloadLen, MaxPayloadSize)
	case payloadLen < 0:
		return dst, fmt.Errorf("%w: negative payload length %d", ErrBadLength, payloadLen)
	}
	at := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	putHeader(dst[at:], payloadLen+HeaderSize)
	return dst, nil
}

// AppendFlush appends a flush packet, 0000: the end of a message.
func AppendFlush(dst []byte) []byte { return append(dst, '0', '0', '0', '0') }

// AppendDelim appends a delim packet, 0001: the section separator of
// protocol v2 requests. Never part of a simple-ipc message.
func AppendDelim(dst []byte) []byte { return append(dst, '0', '0', '0', '1') }

// AppendResponseEnd appends a response-end packet, 0002, as git's stateless
// transports send after a v2 response. Never part of a simple-ipc message.
func AppendResponseEnd(dst []byte) []byte { return append(dst, '0', '0', '0', '2') }
