package main

// The configuration's one truth: the struct tags of config.Config name,
// default and describe every variable; --help is generated from them, and
// docs/configuration.md is held to them here. In process, no binary.

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/config"
)

const configurationDoc = "docs/configuration.md"

// notConfig are variables --help and docs/configuration.md list that Go
// and its libraries read, not config.Config.
var notConfig = []string{"GOMEMLIMIT", "GOGC", "HTTPS_PROXY", "NO_PROXY"}

// docRow is one row of a table of docs/configuration.md: the variables its
// first cell names and its default cell.
type docRow struct {
	names      []string
	defaultTxt string
}

// configurationRows reads every table row of docs/configuration.md whose
// first cell names a variable in backquotes.
func configurationRows(t *testing.T) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile(configurationDoc)
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	rows := map[string]docRow{}
	for line := range strings.SplitSeq(string(b), "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 5 {
			continue
		}
		var row docRow
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			row.names = append(row.names, m[1])
		}
		row.defaultTxt = strings.TrimSpace(cells[2])
		for _, n := range row.names {
			if _, dup := rows[n]; dup {
				t.Errorf("%s has two rows for %s", configurationDoc, n)
			}
			rows[n] = row
		}
	}
	return rows
}

func helpText(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	if code := run(t.Context(), []string{"--help"}, map[string]string{}, &out, io.Discard); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	return out.String()
}

// TestDocsListEveryVariable: every variable of config.Config is in
// --help and has a row in docs/configuration.md with the same default; the
// document names no variable that neither reads.
func TestDocsListEveryVariable(t *testing.T) {
	help := helpText(t)
	rows := configurationRows(t)
	vars := config.Variables()
	if len(vars) < 40 {
		t.Fatalf("config.Variables() lists %d variables; the struct has more", len(vars))
	}
	known := map[string]bool{}
	for _, v := range vars {
		known[v.Name] = true
		line := "  " + v.Name
		if v.Default != "" {
			line += " (default " + v.Default + ")"
		}
		if !strings.Contains(help, "\n"+line+"\n") {
			t.Errorf("--help does not list %q", line)
		}
		row, ok := rows[v.Name]
		if !ok {
			t.Errorf("%s has no row for %s", configurationDoc, v.Name)
			continue
		}
		if v.Default != "" && !strings.Contains(row.defaultTxt, "`"+v.Default+"`") {
			t.Errorf("%s gives %s the default %q; --help says %s", configurationDoc, v.Name, row.defaultTxt, v.Default)
		}
	}
	for _, n := range notConfig {
		known[n] = true
		if !strings.Contains(help, n) {
			t.Errorf("--help does not mention %s", n)
		}
		if _, ok := rows[n]; !ok {
			t.Errorf("%s has no row for %s", configurationDoc, n)
		}
	}
	for n := range rows {
		if !known[n] {
			t.Errorf("%s documents %s, which the sidecar does not read", configurationDoc, n)
		}
	}
}
