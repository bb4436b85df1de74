package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
)

// The unix peer's descriptor passing: what a Go user writes with the
// standard library, one WriteMsgUnix per message carrying one marker byte
// and the descriptors, one ReadMsgUnix per message on the other side.

func openUnixFDStream(ctx context.Context, socket string, size int) (Streamer, error) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		f.Close()
		return nil, err
	}
	fds := make([]int, size)
	for i := range fds {
		fds[i] = int(f.Fd())
	}
	return &unixFDStream{c: c.(*net.UnixConn), file: f, rights: syscall.UnixRights(fds...)}, nil
}

type unixFDStream struct {
	c      *net.UnixConn
	file   *os.File
	rights []byte
	once   sync.Once
}

func (s *unixFDStream) Send([]byte) error {
	_, _, err := s.c.WriteMsgUnix([]byte{fdMsgMarker}, s.rights, nil)
	return err
}

func (s *unixFDStream) Finish(context.Context) error {
	if _, err := s.c.Write([]byte{fdEndMarker}); err != nil {
		return err
	}
	var ack [1]byte
	if _, err := s.c.Read(ack[:]); err != nil {
		return err
	}
	if ack[0] != fdAck {
		return fmt.Errorf("bench: unix fd ack %q", ack[0])
	}
	return nil
}

func (s *unixFDStream) Close() error {
	s.once.Do(func() {
		s.c.Close()
		s.file.Close()
	})
	return nil
}

// serveUnixFDs reads one marker byte per recvmsg with room for the largest
// message's descriptors, closes every descriptor received, and answers the
// end marker.
func serveUnixFDs(c net.Conn) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return
	}
	var b [1]byte
	oob := make([]byte, syscall.CmsgSpace(4*MaxFDsPerMessage))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(b[:], oob)
		if err != nil || n == 0 {
			return
		}
		if oobn > 0 {
			closeRights(oob[:oobn])
		}
		if flags&syscall.MSG_CTRUNC != 0 {
			return // descriptors lost: the client sent more than the scenario allows
		}
		if b[0] == fdEndMarker {
			if _, err := uc.Write([]byte{fdAck}); err != nil {
				return
			}
		}
	}
}

func closeRights(oob []byte) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := syscall.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
}
