package k8s

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"strconv"
	"testing"
)

// configDir is the sidecar's config package, the one place a variable is
// named (its struct tags, which --help prints too).
const configDir = "../config"

// runtimeVariables are read by Go's runtime or main, not by Config.
var runtimeVariables = []string{"GOMEMLIMIT", "GOGC"}

// sidecarVariables lists the environment variables the sidecar reads: the
// env tags of config.Config, read from its source (this module does not
// build the sidecar's), and the runtime's.
func sidecarVariables(t *testing.T) map[string]bool {
	t.Helper()
	pkgs, err := parser.ParseDir(token.NewFileSet(), configDir, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, v := range runtimeVariables {
		vars[v] = true
	}
	var found bool
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			ast.Inspect(f, func(n ast.Node) bool {
				ts, ok := n.(*ast.TypeSpec)
				if !ok || ts.Name.Name != "Config" {
					return true
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return true
				}
				found = true
				for _, field := range st.Fields.List {
					if field.Tag == nil {
						continue
					}
					tag, err := strconv.Unquote(field.Tag.Value)
					if err != nil {
						t.Fatal(err)
					}
					if name := reflect.StructTag(tag).Get("env"); name != "" && name != "-" {
						vars[name] = true
					}
				}
				return false
			})
		}
	}
	if !found || len(vars) < 20 {
		t.Fatalf("found %d variables in %s's Config (struct found: %v)", len(vars), configDir, found)
	}
	return vars
}

// unknownVariables are the names in set that the sidecar does not read.
func unknownVariables(t *testing.T, set []string) []string {
	t.Helper()
	known := sidecarVariables(t)
	var out []string
	for _, name := range set {
		if !known[name] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestVariablesAreReadFromConfig(t *testing.T) {
	vars := sidecarVariables(t)
	for _, name := range []string{"WECHAT_APP_ID", "LISTEN_ADDR", "REDIS_URL", "REDIS_PASSWORD_FILE", "FLEET_SIZE", "GOMEMLIMIT"} {
		if !vars[name] {
			t.Errorf("%s is missing from the variables read from %s", name, configDir)
		}
	}
	if got := unknownVariables(t, []string{"REDIS_URL", "REDIS_PASSWORD", "FLEET_SIZES"}); !slices.Equal(got, []string{"FLEET_SIZES", "REDIS_PASSWORD"}) {
		t.Errorf("unknown among REDIS_URL, REDIS_PASSWORD, FLEET_SIZES: %v", got)
	}
}

// Every variable any component sets on the sidecar is one it reads: a
// misspelt name would be ignored without a word.
func TestManifestsSetOnlyRealVariables(t *testing.T) {
	all := componentNames(t)
	renders := map[string]rendered{
		"base":                     renderBaseWith(t, all[1:]...),
		"overlays/classic-sidecar": render(t, materialize(t, variant{root: "overlays/classic-sidecar", components: all[1:]}, t.TempDir())),
	}
	for _, f := range []userFixture{{injectNative, true}, {injectClassic, false}} {
		renders[f.String()] = renderUser(t, f, all...)
	}
	for name, r := range renders {
		for _, d := range injected(r) {
			var names []string
			for _, e := range sidecarOf(t, d.Spec.Template.Spec, isNative(d)).Env {
				names = append(names, e.Name)
			}
			if len(names) < 8 {
				t.Errorf("%s: only %v set", name, names)
			}
			if bad := unknownVariables(t, names); len(bad) > 0 {
				t.Errorf("%s: the sidecar is given variables it does not read: %v", name, bad)
			}
		}
	}
}
