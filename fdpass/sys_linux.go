package fdpass

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr from <sys/socket.h>; x/sys/unix has
// SYS_SENDMMSG but neither a wrapper nor this type. Go pads the struct to
// the alignment of Msghdr exactly as C does (64 bytes on amd64/arm64).
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
}

// Syscall seams: tests replace them to inject EAGAIN, EMFILE, MSG_CTRUNC,
// short writes and ETOOMANYREFS. They are read by the passer goroutines, so
// tests swap them only while no passer runs.
var (
	sysSendmmsg   = sendmmsg
	sysRecvmsg    = recvmsg
	sysClose      = unix.Close
	sysDup        = dupCloexec
	sysCloseRange = unix.CloseRange
)

func sendmmsg(fd int, msgs []mmsghdr, flags int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// recvmsg receives into the buffers msg points at; the kernel updates
// msg.Controllen and msg.Flags.
func recvmsg(fd int, msg *unix.Msghdr, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(msg)), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

// closeFD closes a descriptor the passer owns; the error is of no use to
// anyone (Linux always releases the descriptor).
func closeFD(fd int) { sysClose(fd) }

// closeRangeWorks drops to one close per descriptor once close_range
// turns out to be missing (Linux < 5.9, or filtered by seccomp).
var closeRangeWorks atomic.Bool

func init() { closeRangeWorks.Store(true) }

// closeFDs closes every descriptor of fds. Runs of consecutive numbers
// (what one receive usually installs) go in one close_range call. It
// returns the first error. The descriptors must be distinct and owned.
func closeFDs(fds []int) error {
	var first error
	for i := 0; i < len(fds); {
		j := i + 1
		for j < len(fds) && fds[j] == fds[j-1]+1 {
			j++
		}
		if j-i >= 3 && closeRangeWorks.Load() {
			err := sysCloseRange(uint(fds[i]), uint(fds[j-1]), 0)
			if err == nil {
				i = j
				continue
			}
			if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
				closeRangeWorks.Store(false)
			} else if first == nil {
				first = err
			}
		}
		for ; i < j; i++ {
			if err := sysClose(fds[i]); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// cmsgHeaderLen decodes cmsg_len, which is a size_t: 8 bytes on 64-bit
// Linux, 4 on 32-bit.
func cmsgHeaderLen(b []byte) uint64 {
	if unix.SizeofCmsghdr == 16 {
		return binary.NativeEndian.Uint64(b)
	}
	return uint64(binary.NativeEndian.Uint32(b))
}

// cmsgAlignTo rounds n up to the kernel's cmsg alignment (the size of a
// long).
func cmsgAlignTo(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}

var errMalformedCmsg = errors.New("malformed control message")

// parseControl walks the control bytes a receive returned (ctrl must be cut
// to the returned msg_controllen) and appends the descriptors of every
// SCM_RIGHTS message to fds. Descriptors from SCM_PIDFD are closed with
// closeFD: they are never handed out. Other types are ignored. It never
// reads past len(ctrl) nor trusts cmsg_len beyond it, and it does not
// allocate unless fds must grow. On a malformed header it stops and
// returns errMalformedCmsg together with the descriptors found so far, so
// the caller can close them.
func parseControl(ctrl []byte, fds []int, closeFD func(int)) ([]int, error) {
	const hdr = unix.SizeofCmsghdr
	for len(ctrl) >= hdr {
		l := cmsgHeaderLen(ctrl)
		if l < hdr || l > uint64(len(ctrl)) {
			return fds, errMalformedCmsg
		}
		level := int32(binary.NativeEndian.Uint32(ctrl[hdr-8:]))
		typ := int32(binary.NativeEndian.Uint32(ctrl[hdr-4:]))
		data := ctrl[hdr:l]
		if level == unix.SOL_SOCKET && (typ == unix.SCM_RIGHTS || typ == unix.SCM_PIDFD) {
			for ; len(data) >= 4; data = data[4:] {
				fd := int(int32(binary.NativeEndian.Uint32(data)))
				if fd < 0 {
					return fds, errMalformedCmsg
				}
				if typ == unix.SCM_RIGHTS {
					fds = append(fds, fd)
				} else {
					closeFD(fd)
				}
			}
		}
		next := cmsgAlignTo(int(l))
		if next >= len(ctrl) {
			break
		}
		ctrl = ctrl[next:]
	}
	return fds, nil
}

// putRights writes one SCM_RIGHTS control message for fds at the start of
// b, which must hold unix.CmsgSpace(4*len(fds)) bytes, 8-byte aligned.
func putRights(b []byte, fds []int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(4 * len(fds)))
	d := b[unix.CmsgLen(0):]
	for i, fd := range fds {
		binary.NativeEndian.PutUint32(d[4*i:], uint32(int32(fd)))
	}
}
