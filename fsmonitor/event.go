package fsmonitor

import "encoding/binary"

// inotifyHeader is the size of struct inotify_event before its name: wd,
// mask, cookie and len, four 32-bit words in the machine's byte order.
const inotifyHeader = 16

// rawEvent is one decoded inotify event. name aliases the buffer it was
// decoded from and is valid until that buffer is reused.
type rawEvent struct {
	wd   int32
	mask uint32
	name []byte
}

// nextEvent decodes the event at the start of b: the event, what follows
// it, and false when b does not hold a whole event. The name is cut at its
// first NUL (the kernel pads it with NULs).
func nextEvent(b []byte) (ev rawEvent, rest []byte, ok bool) {
	if len(b) < inotifyHeader {
		return rawEvent{}, b, false
	}
	n := binary.NativeEndian.Uint32(b[12:16])
	if uint64(n) > uint64(len(b)-inotifyHeader) {
		return rawEvent{}, b, false
	}
	end := inotifyHeader + int(n)
	name := b[inotifyHeader:end:end]
	for i, c := range name {
		if c == 0 {
			name = name[:i:i]
			break
		}
	}
	ev = rawEvent{
		wd:   int32(binary.NativeEndian.Uint32(b[0:4])),
		mask: binary.NativeEndian.Uint32(b[4:8]),
		name: name,
	}
	return ev, b[end:], true
}
