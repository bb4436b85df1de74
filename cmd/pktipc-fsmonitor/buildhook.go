package main

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// hookSource is the hook's fast path in C (chook/hook.c): it asks a
// running daemon at .git's socket and hands every other case to this
// command's hook. git starts the hook on every status, and a C process
// starts in a fraction of the time a Go one takes.
//
//go:embed chook/hook.c
var hookSource []byte

// buildHook compiles the C hook into out with $CC (default cc), pointing
// its fallback at this very executable.
func buildHook(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		return usage(stderr, "build-hook takes the path of the program to write")
	}
	if strings.HasPrefix(args[0], "-") {
		// An option (--help) is far likelier than a file so named.
		return usage(stderr, fmt.Sprintf("build-hook takes a path, not an option: %q (./%s writes that file)", args[0], args[0]))
	}
	out, err := filepath.Abs(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitFail
	}
	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: cannot find this program's path: %v\n", err)
		return exitFail
	}
	if strings.ContainsAny(self, "\n\x00") {
		fmt.Fprintf(stderr, "error: this program's path %q cannot be compiled in\n", self)
		return exitFail
	}
	// $CC may carry arguments ("ccache gcc", "gcc -m64"), as make takes it.
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		cc = []string{"cc"}
	}
	bin := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(self)
	// Static first: git starts the hook for every command, and a static
	// program starts without the dynamic loader's work. Where the C
	// library has no static archive, the ordinary link does.
	var errs bytes.Buffer
	for _, link := range [][]string{{"-static"}, nil} {
		args := append(append(cc[1:len(cc):len(cc)], "-O2"), link...)
		args = append(args, "-o", out, `-DPKTIPC_FSMONITOR_BIN="`+bin+`"`, "-x", "c", "-")
		cmd := exec.CommandContext(ctx, cc[0], args...)
		cmd.Stdin = bytes.NewReader(hookSource)
		errs.Reset()
		cmd.Stdout, cmd.Stderr = &errs, &errs
		if err = cmd.Run(); err == nil {
			break
		}
	}
	if err != nil {
		stderr.Write(errs.Bytes())
		fmt.Fprintf(stderr, "error: %s: %v\n", strings.Join(cc, " "), err)
		return exitFail
	}
	fmt.Fprintf(stdout, "wrote %s; use it with\n  git config core.fsmonitor '%s'\n  git config core.fsmonitorHookVersion 2\n", out, out)
	fmt.Fprintf(stdout, "and, in a large worktree,\n  git config core.untrackedCache true\n  git config core.splitIndex true\n  git config core.preloadIndex false\n")
	return exitOK
}
