package engine

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// reactorFiles may import gnet: the reactor (loops, enrolment, parking,
// the link to each connection's loop), the gnet callbacks, and the
// doorbells. The protocol drives a connection through conn's transport
// and the reactor's methods; the client, admission, the lobby, the budget
// and the one-shot path never see gnet (DESIGN.md draws the layers).
var reactorFiles = []string{"doorbell.go", "events.go", "reactor.go", "reactor_linux.go"}

func TestGnetStaysInTheReactor(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(path, "github.com/panjf2000/gnet") {
				continue
			}
			seen++
			if !slices.Contains(reactorFiles, f) {
				t.Errorf("%s imports %s; only the reactor's files may", f, path)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no file imports gnet: the check looks at the wrong directory")
	}
	if _, err := os.Stat("DESIGN.md"); err != nil {
		t.Errorf("the layers are drawn in DESIGN.md: %v", err)
	}
}
