package sidecar

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/token"
)

func TestPrefersHTMLOnlyWhenTextHTMLComesFirst(t *testing.T) {
	for accept, want := range map[string]bool{
		browserAccept:                            true,
		"text/html":                              true,
		"text/html, application/json":            true,
		"":                                       false,
		"*/*":                                    false,
		"application/json":                       false,
		"application/json, text/html":            false,
		"text/html;q=0, application/json":        false,
		"text/*":                                 false,
		"application/xml;q=0.9, text/html;q=0.8": true, // listed before JSON, which is not listed
	} {
		if got := prefersHTML([]string{accept}); got != want {
			t.Errorf("Accept %q: HTML %v, want %v", accept, got, want)
		}
	}
}

// TestStatusPageEscapesWhatItShows: a last error holds WeChat's errmsg,
// text the sidecar did not write.
func TestStatusPageEscapesWhatItShows(t *testing.T) {
	w := httptest.NewRecorder()
	writeStatusHTML(w, StatusReport{Version: "v<b>1</b>", Ready: true,
		Apps: []token.Status{{AppID: "wx1", LastError: `<script>alert("x")</script>`, Store: "memory"}}})
	page := w.Body.String()
	if strings.Contains(page, "<script>") || strings.Contains(page, "<b>1</b>") {
		t.Errorf("the page carries unescaped markup:\n%s", page)
	}
	for _, want := range []string{"&lt;script&gt;", "v&lt;b&gt;1&lt;/b&gt;", "<td>wx1</td>", "<th>last_error</th>", "<h2>Cache</h2>"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<h2>Redis</h2>") {
		t.Error("a Redis section without a shared tier")
	}
}

// browserAccept is the Accept header Chromium sends for a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
