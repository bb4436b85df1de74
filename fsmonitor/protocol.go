package fsmonitor

import (
	"bytes"
	"strconv"
	"strings"
)

// Requests of git's fsmonitor protocol.
const (
	reqQuit  = "quit"
	reqFlush = "flush"
	// builtinPrefix starts a V2 query, "builtin:<token>:<seq>", and the
	// first line of every reply.
	builtinPrefix = "builtin:"
)

// maxReplyWrite bounds one write of paths, below git's packet limit
// (65516 bytes of payload) as git's daemon does.
const maxReplyWrite = 65516 - 1

// parseQuery splits "builtin:<token>:<seq>". ok is false for anything
// else: a V1 timestamp, "builtin:fake", garbage; all of them get a trivial
// reply.
func parseQuery(req []byte) (token string, seq uint64, ok bool) {
	rest, found := bytes.CutPrefix(req, []byte(builtinPrefix))
	if !found {
		return "", 0, false
	}
	i := bytes.LastIndexByte(rest, ':')
	if i <= 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(string(rest[i+1:]), 10, 64)
	if err != nil {
		return "", 0, false
	}
	return string(rest[:i]), seq, true
}

// appendHeader appends a reply's first write: "builtin:<token>:<seq>" and
// its NUL.
func appendHeader(dst []byte, token string, seq uint64) []byte {
	dst = append(dst, builtinPrefix...)
	dst = append(dst, token...)
	dst = append(dst, ':')
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, 0)
}

// coneMarker follows each directory a reply names ("d/" then
// "d/"+coneMarker): git's untracked cache drops what it knows of a
// directory's own contents only when a path inside the directory is
// reported, and "d/" alone refreshes d's parent. Without it, an untracked
// directory that moved away and came back empty under the same name still
// shows as untracked. The name matches nothing (git checks it and finds
// no such file).
const coneMarker = ".pktipc-fsmonitor-cone"

// trivialBody is a trivial reply's body: everything may have changed.
var trivialBody = []byte{'/', 0}

// writeReply writes a's reply with write, one call per packet: the header,
// then "/" or the paths, NUL-terminated, in batches below git's packet
// limit.
func writeReply(a answer, buf []byte, write func([]byte) error) error {
	if err := write(appendHeader(buf[:0], a.token, a.seq)); err != nil {
		return err
	}
	if a.trivial {
		return write(trivialBody)
	}
	batch := buf[:0]
	for _, p := range a.paths {
		dir := strings.HasSuffix(p, "/")
		n := len(p) + 1
		if dir {
			n += len(p) + len(coneMarker) + 1
		}
		if len(batch) > 0 && len(batch)+n > maxReplyWrite {
			if err := write(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
		batch = append(batch, p...)
		batch = append(batch, 0)
		if dir {
			batch = append(batch, p...)
			batch = append(batch, coneMarker...)
			batch = append(batch, 0)
		}
	}
	if len(batch) > 0 {
		return write(batch)
	}
	return nil
}
