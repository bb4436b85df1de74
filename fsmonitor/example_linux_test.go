package fsmonitor_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pktipc/pktipc/fsmonitor"
)

// A Monitor embedded in a program: the first query, without a token, is
// trivial; the next one, with the token of the first reply, lists what
// changed in between.
func ExampleMonitor_Query() {
	root, err := os.MkdirTemp("", "fsmonitor-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Mkdir(filepath.Join(root, ".git"), 0o755)

	ctx := context.Background()
	m, err := fsmonitor.Start(ctx, fsmonitor.Options{Worktree: root})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	token, _, trivial := m.Query(ctx, "builtin:fake")
	fmt.Println("first reply trivial:", trivial)

	os.MkdirAll(filepath.Join(root, "docs"), 0o755)
	os.WriteFile(filepath.Join(root, "docs", "new.txt"), []byte("hello"), 0o644)
	_, paths, trivial := m.Query(ctx, token)
	fmt.Println("second reply trivial:", trivial)
	fmt.Println(paths)
	// Output:
	// first reply trivial: true
	// second reply trivial: false
	// [docs/ docs/new.txt]
}
