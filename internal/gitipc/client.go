package gitipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// Send is `send`: probe, then send Options.Token (or "(no-command)") once,
// retrying a busy server for about a second like git; print the answer and
// a newline if the answer is not empty. Call it from one goroutine at a
// time.
func (g *Tool) Send(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	token := g.opts().Token
	if token == "" {
		token = noCommand
	}
	return exitStatus(g.send(ctx, token))
}

func (g *Tool) send(ctx context.Context, token string) bool {
	name := g.opts().Name
	reply, err := engine.Send(ctx, name, []byte(token), engine.WithDialOptions(uds.WaitIfBusy()))
	if err != nil {
		g.clientError(err)
		g.errorf("failed to send '%s' to '%s'", token, name)
		return false
	}
	if len(reply) > 0 {
		// printf("%s\n"): the answer as a C string.
		g.write(g.Stdout, append(cString(reply), '\n'))
	}
	return true
}

// clientError prints what git's ipc_client_send_command prints for a
// failure: nothing when the connection failed, the pkt-line reader's
// complaint for a malformed reply, then "could not read IPC response".
// engine reports a failed write and a failed read alike, so a failed write
// also reads "could not read IPC response" (git: "could not send IPC
// command"); git's client usually dies of SIGPIPE there instead.
func (g *Tool) clientError(err error) {
	var de *uds.DialError
	if errors.As(err, &de) || errors.Is(err, context.Canceled) {
		return
	}
	var fe *frame.Error
	if errors.As(err, &fe) {
		switch {
		case errors.Is(fe, frame.ErrBadHeader):
			g.errorf("protocol error: bad line length character: %s", cString(fe.Header[:]))
		case errors.Is(fe, frame.ErrBadLength):
			g.errorf("protocol error: bad line length %d", fe.Length)
		case errors.Is(fe, frame.ErrTooLong):
			g.errorf("protocol error: bad line length %d", fe.Length-frame.HeaderSize)
		}
	}
	g.errorf("could not read IPC response")
}

// Sendbytes is `sendbytes`: probe, then send "sendbytes " and
// Options.Bytecount copies of Options.Byte, and print
// "sent:<c><%08d count> <answer without trailing whitespace>". Call it from
// one goroutine at a time.
func (g *Tool) Sendbytes(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	o := g.opts()
	return exitStatus(g.sendbytes(ctx, o.Bytecount, o.Byte))
}

// sendbytes is git's do_sendbytes: one request on its own connection.
func (g *Tool) sendbytes(ctx context.Context, count int, c byte) bool {
	name := g.opts().Name
	reply, err := engine.Send(ctx, name, SendbytesRequest(count, c), engine.WithDialOptions(uds.WaitIfBusy()))
	if err != nil {
		g.clientError(err)
		// %c writes the byte itself, as C does, not its UTF-8 form.
		msg := fmt.Appendf(nil, "error: client failed to sendbytes(%d, '", count)
		msg = append(msg, c)
		g.write(g.Stderr, fmt.Appendf(msg, "') to '%s'\n", name))
		return false
	}
	line := append([]byte("sent:"), c)
	line = appendZeroPadded(line, count, 8)
	line = append(line, ' ')
	line = append(line, cString(rtrim(reply))...)
	g.write(g.Stdout, append(line, '\n'))
	return true
}

// Multiple is `multiple`: probe, then Options.Threads client threads;
// thread k sends Options.Batchsize requests of letter 'A'+k%26 and sizes
// Bytecount+Batchsize*(k/26)+i, each on a new connection, printing a sent
// line for each; then "client (good N) (join 0), (errors E)". It exits 1 if
// any request failed. Call it from one goroutine at a time; it starts the
// threads itself.
func (g *Tool) Multiple(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	o := g.opts()
	var (
		mu           sync.Mutex // guards good and failed
		good, failed int
	)
	var wg sync.WaitGroup
	for k := range o.Threads {
		wg.Go(func() {
			letter := byte('A' + k%26)
			base := o.Bytecount + o.Batchsize*(k/26)
			var ok, bad int
			for i := range o.Batchsize {
				if g.sendbytes(ctx, base+i, letter) {
					ok++
				} else {
					bad++
				}
			}
			mu.Lock()
			good += ok
			failed += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	// Goroutines cannot fail to join: git's join count is always 0 here.
	g.printf(g.Stdout, "client (good %d) (join %d), (errors %d)\n", good, 0, failed)
	return exitStatus(failed == 0)
}

// rtrim is git's strbuf_rtrim: it drops trailing bytes that git's isspace
// counts, which are space, tab, newline and carriage return (not C's
// vertical tab and form feed).
func rtrim(b []byte) []byte { return bytes.TrimRight(b, " \t\n\r") }
