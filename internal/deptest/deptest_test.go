package deptest

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/pktipc/pktipc"

// rule says what one package of this module may import.
type rule struct {
	internal []string // packages of this module (prefix match on a path segment)
	external []string // third-party module prefixes
	anyExt   bool     // any third-party import is fine (bench, the CLI)
}

// The import table: which packages each package of this module may import.
// x/sys/unix is listed where a package may use it; separately it is allowed
// only in _linux.go files.
var rules = map[string]rule{
	"frame":  {},
	"uds":    {external: []string{"golang.org/x/sys/unix"}},
	"fdpass": {external: []string{"golang.org/x/sys/unix"}},
	"ring":   {external: []string{"golang.org/x/sys/unix"}},
	"perf":   {external: []string{"golang.org/x/sys/unix"}},
	"engine": {
		internal: []string{"frame", "uds", "fdpass", "ring"},
		external: []string{"github.com/panjf2000/gnet/v2", "github.com/valyala/bytebufferpool", "golang.org/x/sys/unix"},
	},
	// LibIPC's event model beside the engine, on the leaves.
	"events": {
		internal: []string{"frame", "uds"},
		external: []string{"github.com/valyala/bytebufferpool", "golang.org/x/sys/unix"},
	},
	// git's test-tool on the engine, behind ipcbench's git commands and
	// bench's git-vs-pktipc peer and torture server.
	// git's fsmonitor protocol on the engine.
	"fsmonitor": {
		internal: []string{"engine", "uds", "frame"},
		external: []string{"golang.org/x/sys/unix"},
	},
	"cmd/pktipc-fsmonitor": {internal: []string{"fsmonitor", "engine", "uds"}},
	"internal/gitipc":      {internal: []string{"engine", "frame", "uds"}},
	"bench":                {internal: []string{"bench", "engine", "events", "frame", "uds", "fdpass", "ring", "perf", "internal/gitipc"}, anyExt: true},
	"cmd/ipcbench":         {internal: []string{"bench", "engine", "events", "perf", "internal/gitipc"}, anyExt: true},
	"internal/leakcheck":   {external: []string{"go.uber.org/goleak"}},
	"internal/deptest":     {},
}

type pkg struct {
	ImportPath   string
	Dir          string
	GoFiles      []string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// ruleFor finds the rule of a package: its own entry, or its nearest
// ancestor's (bench/plot follows bench).
func ruleFor(rel string) (rule, bool) {
	for p := rel; p != "."; p = filepath.Dir(p) {
		if r, ok := rules[p]; ok {
			return r, true
		}
	}
	return rule{}, false
}

func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func hasPrefix(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func TestImportTable(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		r, ok := ruleFor(rel)
		if !ok {
			t.Errorf("%s: package not in the import table; add it to rules", rel)
			continue
		}
		for _, imp := range p.Imports {
			switch {
			case isStd(imp):
				if imp == "testing" && rel != "internal/leakcheck" {
					t.Errorf("%s: production code imports testing", rel)
				}
			case hasPrefix(imp, module):
				target := strings.TrimPrefix(imp, module+"/")
				if target == "internal/leakcheck" {
					t.Errorf("%s: production code imports internal/leakcheck (test files only)", rel)
					continue
				}
				allowed := false
				for _, a := range r.internal {
					if hasPrefix(target, a) {
						allowed = true
					}
				}
				if !allowed {
					t.Errorf("%s may not import %s", rel, target)
				}
			default:
				allowed := r.anyExt
				for _, a := range r.external {
					if hasPrefix(imp, a) {
						allowed = true
					}
				}
				if hasPrefix(imp, "github.com/panjf2000/gnet") && !hasPrefix(rel, "engine") {
					allowed = false
				}
				if !allowed {
					t.Errorf("%s may not import third-party %s", rel, imp)
				}
			}
		}
	}
}

// TestSysUnixOnlyInLinuxFiles checks that golang.org/x/sys/unix appears only
// in _linux.go files, so every package still builds elsewhere.
func TestSysUnixOnlyInLinuxFiles(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range listPackages(t) {
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if path == "golang.org/x/sys/unix" && !strings.HasSuffix(name, "_linux.go") {
					t.Errorf("%s/%s imports x/sys/unix outside a _linux.go file", p.ImportPath, name)
				}
			}
		}
	}
}

// TestOtherPlatformsBuild cross-compiles the module for a non-Linux system,
// which catches a _linux.go symbol without its _other.go stub.
func TestOtherPlatformsBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compilation skipped in -short mode")
	}
	cmd := exec.Command("go", "vet", module+"/...")
	cmd.Env = append(cmd.Environ(), "GOOS=darwin", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=darwin go vet: %v\n%s", err, out)
	}
}
