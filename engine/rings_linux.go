package engine

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/ring"
)

// ringsSupported: rings need memfd seals and SCM_RIGHTS, and package ring
// needs atomics that the peer process honours, which not every Linux
// architecture has: a client there does not ask for rings.
const ringsSupported = ring.Supported

// writeWithFiles writes b on uc with the descriptors of files attached to
// its first byte.
func writeWithFiles(uc *net.UnixConn, b []byte, files ...*os.File) error {
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	_, _, err := uc.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	return err
}

// readWithRights reads into b what uc has, and the descriptors that came
// with it (close-on-exec: Go's ReadMsgUnix asks for MSG_CMSG_CLOEXEC). The
// descriptors are the caller's, also with an error.
func readWithRights(uc *net.UnixConn, b []byte) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(8*4))
	n, oobn, flags, _, err := uc.ReadMsgUnix(b, oob)
	fds, perr := parseRights(oob[:oobn])
	switch {
	case err != nil:
	case perr != nil:
		err = perr
	case flags&unix.MSG_CTRUNC != 0:
		err = errors.New("engine: descriptors truncated")
	}
	return n, fds, err
}

// parseRights returns the descriptors in the control messages of oob.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		fds = append(fds, got...)
		if err != nil {
			return fds, err
		}
	}
	return fds, nil
}

// closeFDs closes the descriptors of fds that are not -1.
func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
}
