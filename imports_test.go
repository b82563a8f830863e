package main

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/wxa-sidecar/wxa-sidecar"

// importRules are the reshape's "never imports": each package's room, kept
// by reading its direct imports. A prefix ending in "/" matches a whole
// tree; otherwise the path must match exactly or be a subpackage.
var importRules = map[string][]string{
	"wechat": {module + "/"},
	// The sealed codec is shared by the Redis tier and the durable store,
	// and knows neither.
	"seal":    {module + "/"},
	"wxacode": {"net/http", module + "/cache", module + "/quota"},
	"quota":   {"net/http", "github.com/prometheus/"},
	"cache":   {module + "/wxacode", module + "/wechat"},
	"codes":   {"net/http/httputil", "github.com/redis/", "golang.org/x/time/rate"},
	"proxy":   {"github.com/dgraph-io/ristretto", "golang.org/x/time/rate"},
	// The fake shares no code with what it tests.
	"wechattest": {module + "/"},
	"token":      {module + "/cache", module + "/proxy", module + "/quota", module + "/codes"},
	// Metrics turn the parts' hooks into series; they serve no request.
	"metrics": {module + "/proxy", module + "/token", module + "/cache", module + "/config"},
	// The soak judges the binary from outside, as a caller and as WeChat:
	// none of the sidecar's own packages.
	"bench/soak": {module + "/cache", module + "/codes", module + "/config", module + "/fleet", module + "/metrics",
		module + "/proxy", module + "/quota", module + "/seal", module + "/token", module + "/upstream",
		module + "/wechat", module + "/wxacode", module + "/pregen"},
}

// onlyMainImports are packages no package but main may import.
var onlyMainImports = []string{module + "/config", module + "/wechattest"}

// fakeRunners may import wechattest besides main: commands that run the
// fake as WeChat's stand-in, as main's --demo does.
var fakeRunners = map[string]bool{module + "/bench/soak": true}

type listedPackage struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) map[string]listedPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", "./...").Output()
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
// its room says it never does (README's "Code layout").
func TestPackagesKeepToTheirRooms(t *testing.T) {
	pkgs := listPackages(t)
	for name, never := range importRules {
		p, ok := pkgs[module+"/"+name]
		if !ok {
			t.Errorf("package %s is missing", name)
			continue
		}
		for _, imp := range p.Imports {
			for _, rule := range never {
				if matchesImport(imp, rule) {
					t.Errorf("%s imports %s; it must never import %s", name, imp, strings.TrimSuffix(rule, "/"))
				}
			}
		}
	}
	for path, p := range pkgs {
		if path == module {
			continue
		}
		for _, imp := range p.Imports {
			for _, only := range onlyMainImports {
				if imp == only && !(only == module+"/wechattest" && fakeRunners[path]) {
					t.Errorf("%s imports %s; only main may", path, imp)
				}
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
