package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// hookVersion is the only version of git's fsmonitor hook interface
// spoken: version 1 passes a timestamp, version 2 the daemon's own token,
// which the daemon needs.
const hookVersion = "2"

// trivialReply is the hook's answer when no daemon can answer: a token
// the daemon will not know ("builtin:fake", git's own "no token yet"),
// then "/", everything may have changed, so git scans.
const trivialReply = fakeQuery + "\x00/\x00"

// hook answers git's fsmonitor hook, version 2: args are the version and
// the token git saved. It prints the daemon's reply as it came (token,
// NUL, then "/" NUL or NUL-terminated paths), starting the daemon if none
// answers. It fails only on bad arguments; otherwise git gets at worst a
// trivial reply, and errors go to stderr, which git shows.
func hook(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 {
		return usage(stderr, "hook takes a version and a token")
	}
	if args[0] != hookVersion {
		fmt.Fprintf(stderr, "error: pktipc-fsmonitor: hook version %q is not supported; set core.fsmonitorHookVersion to 2\n", args[0])
		return exitFail
	}
	// Pass the token as it is: git's first one is a V1 timestamp, which
	// the daemon answers, like anything but its own tokens, trivially and
	// with a token of its own. An empty one would be an empty request:
	// ask as git does when it has no token.
	req := args[1]
	if req == "" {
		req = fakeQuery
	}
	reply, err := hookQuery(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "warning: pktipc-fsmonitor: %v; git will scan the worktree\n", err)
		reply = []byte(trivialReply)
	}
	if _, err := stdout.Write(reply); err != nil {
		fmt.Fprintf(stderr, "error: pktipc-fsmonitor: %v\n", err)
		return exitFail
	}
	return exitOK
}

// hookQuery sends req to the worktree's daemon, starting one if none
// answers.
func hookQuery(ctx context.Context, req string) ([]byte, error) {
	r, err := findHookRepo(ctx)
	if err != nil {
		return nil, err
	}
	reply, err := send(ctx, r.socket, req)
	if err != nil {
		if err := startDaemon(ctx, r); err != nil && !errors.Is(err, errRunning) {
			return nil, err
		}
		if reply, err = send(ctx, r.socket, req); err != nil {
			return nil, err
		}
	}
	// git keeps whatever precedes the first NUL as its next token: let
	// nothing but a daemon's reply through.
	if !bytes.HasPrefix(reply, []byte("builtin:")) || bytes.IndexByte(reply, 0) < 0 {
		return nil, fmt.Errorf("malformed reply %.40q", reply)
	}
	return reply, nil
}
