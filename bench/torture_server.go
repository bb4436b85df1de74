package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"sync"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/internal/gitipc"
)

// tortureSettings configure the torture server role; a zero field keeps
// the engine's default.
type tortureSettings struct {
	Budget    int64         `json:"budget,omitempty"`      // memory budget, bytes
	MaxConns  int           `json:"max_conns,omitempty"`   // connections in all
	MaxPerUID int           `json:"max_per_uid,omitempty"` // connections per uid, with MaxConns
	FirstByte time.Duration `json:"first_byte,omitempty"`  // first-byte timeout
}

// serveTorture is the server of the torture scenarios: git's test daemon
// (ipcbench serve) plus two commands: "chk:" verified echoes and "big:"
// replies of a requested size, both on the worker pool.
func serveTorture(ctx context.Context, cfg serverConfig, settings tortureSettings, ready func()) error {
	opts := append(gitipc.ServerOptions(engine.DefaultWorkers),
		engine.WithInlineFilter(func(req []byte) bool {
			return string(req) != "slow" && !strings.HasPrefix(string(req), chkPrefix) && !strings.HasPrefix(string(req), sizedPrefix)
		}))
	if settings.Budget > 0 {
		opts = append(opts, engine.WithMemoryBudget(settings.Budget))
	}
	if settings.MaxConns > 0 {
		opts = append(opts, engine.WithMaxConns(settings.MaxConns, settings.MaxPerUID))
	}
	if settings.FirstByte > 0 {
		opts = append(opts, engine.WithFirstByteTimeout(settings.FirstByte))
	}
	s, err := engine.NewServer(cfg.Socket, engine.HandlerFunc(tortureHandler), opts...)
	if err != nil {
		return err
	}
	ready()
	err = s.Serve(ctx)
	if errors.Is(err, engine.ErrServerClosed) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Verified requests: chkPrefix, a sequence number (8 bytes) and a reply
// size (4 bytes). The reply carries the sequence number, the CRC-32C of
// its filler and the filler, whose bytes follow from the sequence number,
// so a reply handed to the wrong request cannot pass for its own.
const (
	chkPrefix   = "chk:"
	sizedPrefix = "big:"
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

func appendVerified(dst []byte, seq uint64, size int) []byte {
	dst = append(dst, chkPrefix...)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	return binary.LittleEndian.AppendUint32(dst, uint32(size))
}

// verifiedFiller writes the filler of request seq into p.
func verifiedFiller(p []byte, seq uint64) {
	x := seq*0x9e3779b97f4a7c15 | 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
}

// verifiedReply is the reply to request seq of size.
func verifiedReply(seq uint64, size int) []byte {
	b := make([]byte, 12+size)
	binary.LittleEndian.PutUint64(b, seq)
	verifiedFiller(b[12:], seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[12:], crc32c))
	return b
}

// verifyReply reports whether reply answers request seq of size.
func verifyReply(reply []byte, seq uint64, size int) bool {
	if len(reply) != 12+size || binary.LittleEndian.Uint64(reply) != seq ||
		binary.LittleEndian.Uint32(reply[8:]) != crc32.Checksum(reply[12:], crc32c) {
		return false
	}
	var first [8]byte
	verifiedFiller(first[:min(8, size)], seq)
	return string(reply[12:12+min(8, size)]) == string(first[:min(8, size)])
}

func appendSized(dst []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(append(dst, sizedPrefix...), uint32(size))
}

// sizedFiller is the filler of "big:" replies: zeros, never written, so
// the pages behind it are the kernel's shared zero page.
var sizedFiller = sync.OnceValue(func() []byte { return make([]byte, maxSized) })

const maxSized = 64 << 20

func tortureHandler(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
	switch {
	case len(req) == len(chkPrefix)+12 && string(req[:len(chkPrefix)]) == chkPrefix:
		seq := binary.LittleEndian.Uint64(req[len(chkPrefix):])
		size := int(binary.LittleEndian.Uint32(req[len(chkPrefix)+8:]))
		_, err := w.Write(verifiedReply(seq, min(size, 16<<20)))
		return err
	case len(req) == len(sizedPrefix)+4 && string(req[:len(sizedPrefix)]) == sizedPrefix:
		size := min(int(binary.LittleEndian.Uint32(req[len(sizedPrefix):])), maxSized)
		_, err := w.Write(sizedFiller()[:size])
		return err
	}
	return gitipc.Handler{}.ServeIPC(ctx, req, w)
}
