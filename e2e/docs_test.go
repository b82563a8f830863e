package e2e

// Tests of the documents: README stays short, and every link and anchor in
// README.md and docs/ opens something. Files only, no process: they run
// under -short too.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// readmeMaxLines is README's budget: what the sidecar is, the two
// commands, install, the quickstarts and links. Everything else belongs in
// docs/.
const readmeMaxLines = 250

// repoRoot is the repository, seen from e2e/.
const repoRoot = ".."

// ownBlobURL is how runbook links and the like name a file of this
// repository on GitHub; such links are checked like relative ones.
const ownBlobURL = "https://github.com/wxa-sidecar/wxa-sidecar/blob/main/"

func TestDocsReadmeIsShort(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines, want at most %d: move the detail into docs/", n, readmeMaxLines)
	}
}

// documents are the Markdown files whose links are checked: README and
// everything under docs/, and the compose quickstart README links to.
func documents(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("docs/ has no Markdown files")
	}
	return append([]string{filepath.Join(repoRoot, "README.md"), filepath.Join(repoRoot, "deploy", "compose", "README.md")}, docs...)
}

var (
	// mdLink is an inline link or image: [text](target) or
	// [text](target "title"); the text may span lines.
	mdLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// codeSpan is inline code, whose brackets are no link.
	codeSpan = regexp.MustCompile("`[^`\n]*`")
	// headingLink is a link inside a heading, of which GitHub slugs the
	// text only.
	headingLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// prose is a Markdown file without its fenced code blocks (their lines
// left empty, so line numbers hold) and with inline code blanked.
func prose(text string) string {
	lines := strings.Split(text, "\n")
	fenced := false
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			lines[i] = ""
			continue
		}
		if fenced {
			lines[i] = ""
			continue
		}
		lines[i] = codeSpan.ReplaceAllStringFunc(line, func(s string) string { return strings.Repeat("x", len(s)) })
	}
	return strings.Join(lines, "\n")
}

// slug is the anchor GitHub gives a heading: its text lower-cased, every
// character but letters, marks, digits, '-', '_' and spaces dropped, spaces
// turned into '-'.
func slug(heading string) string {
	heading = headingLink.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors are a Markdown file's heading anchors; a repeated heading gets
// -1, -2… as on GitHub.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		hashes := len(line) - len(strings.TrimLeft(line, "#"))
		if fenced || hashes == 0 || hashes > 6 || !strings.HasPrefix(line[hashes:], " ") {
			continue
		}
		s := slug(line[hashes:])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// linkProblem says what is wrong with target, a link in the file from, or
// "" when it opens a file of the repository (and a heading of it, when it
// names one).
func linkProblem(from, target string) string {
	if rest, ok := strings.CutPrefix(target, ownBlobURL); ok {
		// A link to this repository on GitHub: the same file here.
		rel, err := filepath.Rel(filepath.Dir(from), filepath.Join(repoRoot, rest))
		if err != nil {
			return err.Error()
		}
		target = rel
	}
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return "" // the wider web is not ours to check
	}
	path, anchor, _ := strings.Cut(target, "#")
	file := from
	if path != "" {
		if strings.HasPrefix(path, "/") {
			return "an absolute path: GitHub resolves it from the site's root, not the repository's"
		}
		file = filepath.Join(filepath.Dir(from), path)
		if _, err := os.Stat(file); err != nil {
			return "no such file or directory"
		}
	}
	if anchor == "" {
		return ""
	}
	if !strings.HasSuffix(file, ".md") {
		return "an anchor into a file that is not Markdown"
	}
	text, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	if !anchors(string(text))[anchor] {
		return fmt.Sprintf("%s has no heading #%s", filepath.Base(file), anchor)
	}
	return ""
}

func TestDocsLinksAndAnchorsResolve(t *testing.T) {
	checked := 0
	for _, doc := range documents(t) {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		p := prose(string(text))
		for _, m := range mdLink.FindAllStringSubmatchIndex(p, -1) {
			target := p[m[2]:m[3]]
			line := strings.Count(p[:m[0]], "\n") + 1
			checked++
			if problem := linkProblem(doc, target); problem != "" {
				t.Errorf("%s:%d: link %s: %s", doc, line, target, problem)
			}
		}
	}
	if checked < 50 {
		t.Errorf("checked %d links in all; the documents link far more than that, so the parser is broken", checked)
	}
}

// TestDocsLinkCheckerCatchesDeadLinks: the checker above is no checker if
// it passes anything; a dead file, a dead anchor and a dead link into
// another document each fail it.
func TestDocsLinkCheckerCatchesDeadLinks(t *testing.T) {
	readme := filepath.Join(repoRoot, "README.md")
	for _, target := range []string{"docs/nothing.md", "#no-such-heading", "docs/operations.md#runbook-nothing",
		ownBlobURL + "docs/operations.md#runbook-nothing", "/docs/operations.md"} {
		if linkProblem(readme, target) == "" {
			t.Errorf("link %s passes", target)
		}
	}
	for _, target := range []string{"docs/operations.md#runbook-redis-down", "#two-commands", "LICENSE",
		ownBlobURL + "docs/operations.md#runbooks", "https://example.com/#anything"} {
		if problem := linkProblem(readme, target); problem != "" {
			t.Errorf("link %s: %s", target, problem)
		}
	}
	for heading, want := range map[string]string{
		"### `GET /qrcode`": "get-qrcode",
		"## Links: URL Scheme, URL Link, Short Link, NFC scheme": "links-url-scheme-url-link-short-link-nfc-scheme",
		"### Runbook: quota cool-down":                           "runbook-quota-cool-down",
		"## Many replicas: the shared tier (`REDIS_URL`)":        "many-replicas-the-shared-tier-redis_url",
		"## Standard error: plain text, then JSON":               "standard-error-plain-text-then-json",
		"## Clusters older than 1.29 (classic sidecar)":          "clusters-older-than-129-classic-sidecar",
		"## Sizing — the cache × 1.3":                            "sizing--the-cache--13",
		"## See [the runbooks](operations.md#runbooks) first":    "see-the-runbooks-first",
	} {
		var got []string
		for a := range anchors(heading + "\n") {
			got = append(got, a)
		}
		if len(got) != 1 || got[0] != want {
			t.Errorf("anchors of %q = %q, want %q", heading, got, want)
		}
	}
	if a := anchors("## Tests\n\n```\n## not a heading\n```\n## Tests\n"); !a["tests"] || !a["tests-1"] || a["not-a-heading"] {
		t.Errorf("anchors of a repeated heading and a fenced one: %v", a)
	}
}

// TestDocsListTheKnownEndpoints: docs/limits.md lists exactly the
// endpoints UPSTREAM_LIMITS accepts.
func TestDocsListTheKnownEndpoints(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "limits.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Known endpoints\n")
	if !ok {
		t.Fatal(`docs/limits.md has no "## Known endpoints" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^- `(/[^`]+)`$").FindAllStringSubmatch(section, -1) {
		listed = append(listed, m[1])
	}
	slices.Sort(listed)
	if want := wechat.KnownEndpoints(); !slices.Equal(listed, want) {
		t.Errorf("docs/limits.md lists %v\nwant wechat.KnownEndpoints() %v", listed, want)
	}
}
