package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/wxa-sidecar/wxa-sidecar"

// onlyWiringImports are packages no package but main and sidecar/ may
// import: the config is read in one place, and the fake is wired only for
// --demo.
var onlyWiringImports = map[string][]string{
	module + "/config": {module, module + "/sidecar"},
	// The chaos soak runs the fake as WeChat's stand-in, as --demo does.
	module + "/wechattest": {module, module + "/bench/soak"},
}

// layoutDoc holds the "Code layout" table the import rules are read from.
const layoutDoc = "../docs/design.md"

// layoutRules reads docs/design.md's "Code layout" table: each row's package and
// what it never imports. "any package of ours" is the whole module; a
// backquoted `name/` is our package; the words Redis, prometheus,
// ristretto and x/time/rate name those libraries.
func layoutRules(t *testing.T) map[string][]string {
	t.Helper()
	doc, err := os.ReadFile(layoutDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Code layout\n")
	if !ok {
		t.Fatalf("%s has no \"## Code layout\" section", layoutDoc)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	words := map[string]string{
		"Redis":       "github.com/redis/",
		"prometheus":  "github.com/prometheus/",
		"ristretto":   "github.com/dgraph-io/ristretto",
		"x/time/rate": "golang.org/x/time/rate",
	}
	backquoted := regexp.MustCompile("`([^`]+)`")
	rules := map[string][]string{}
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		pkg := module + "/" + strings.TrimSuffix(name, "/")
		if name == "main.go" {
			pkg = module
		}
		// The last cell is what the package never imports; a comma or a
		// colon ends each item's name.
		never := strings.TrimSpace(cells[len(cells)-2])
		var list []string
		if strings.HasPrefix(never, "any package of ours") {
			list = append(list, module+"/")
		}
		for _, m := range backquoted.FindAllStringSubmatch(never, -1) {
			item := m[1]
			if strings.HasSuffix(item, "/") {
				list = append(list, module+"/"+strings.TrimSuffix(item, "/"))
			} else {
				list = append(list, item)
			}
		}
		head, _, _ := strings.Cut(never, ":")
		for word, rule := range words {
			if regexp.MustCompile(`(^|[ ,])` + regexp.QuoteMeta(word) + `($|[ ,])`).MatchString(head) {
				list = append(list, rule)
			}
		}
		if never != "—" && len(list) == 0 {
			t.Errorf("the Code layout's row for %s says it never imports %q, which names nothing this test knows", name, never)
		}
		rules[pkg] = list
	}
	if len(rules) == 0 {
		t.Fatal("the Code layout table of " + layoutDoc + " has no rows")
	}
	return rules
}

type listedPackage struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) map[string]listedPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]listedPackage{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

func matchesImport(imp, rule string) bool {
	if strings.HasSuffix(rule, "/") {
		return strings.HasPrefix(imp, rule)
	}
	return imp == rule || strings.HasPrefix(imp, rule+"/")
}

// TestPackagesKeepToTheirRooms fails when a package imports, directly, what
// its row of the "Code layout" (docs/design.md) says it never does, when a package has
// no row, or when a row names a package that does not exist.
func TestPackagesKeepToTheirRooms(t *testing.T) {
	pkgs := listPackages(t)
	rules := layoutRules(t)
	for path := range pkgs {
		if _, ok := rules[path]; !ok && !strings.HasPrefix(path, module+"/bench/fleet") {
			t.Errorf("package %s has no row in the Code layout of docs/design.md", path)
		}
	}
	for path, never := range rules {
		p, ok := pkgs[path]
		if !ok {
			t.Errorf("the Code layout of docs/design.md names %s, which does not exist", path)
			continue
		}
		for _, imp := range p.Imports {
			for _, rule := range never {
				if matchesImport(imp, rule) && imp != path {
					t.Errorf("%s imports %s; docs/design.md says it never imports %s", path, imp, strings.TrimSuffix(rule, "/"))
				}
			}
		}
	}
	for path, p := range pkgs {
		for _, imp := range p.Imports {
			if allowed, ok := onlyWiringImports[imp]; ok && !slices.Contains(allowed, path) {
				t.Errorf("%s imports %s; only %v may", path, imp, allowed)
			}
		}
	}
}

// TestImportRulesBite checks the matcher on the shapes the rules use, so a
// rule cannot pass by never matching anything.
func TestImportRulesBite(t *testing.T) {
	for _, c := range []struct {
		imp, rule string
		want      bool
	}{
		{"net/http", "net/http", true},
		{"net/http/httputil", "net/http", true},
		{"net/http/httptest", "net/http/httputil", false},
		{"github.com/prometheus/client_golang/prometheus", "github.com/prometheus/", true},
		{module + "/cache", module + "/", true},
		{module + "/cachex", module + "/cache", false},
		{"golang.org/x/time/rate", "golang.org/x/time/rate", true},
	} {
		if got := matchesImport(c.imp, c.rule); got != c.want {
			t.Errorf("matchesImport(%q, %q) = %v, want %v", c.imp, c.rule, got, c.want)
		}
	}
}
