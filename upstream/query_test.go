package upstream

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzStripToken holds the query rewrite to its contract: no part that
// decodes to access_token survives, every other part survives in order and
// byte for byte, and the managed token is the one appended.
func FuzzStripToken(f *testing.F) {
	for _, seed := range []string{"", "a=1", "access_token=x", "access%5Ftoken=x&a=1", "b=2;x&a=1", "a=1&&b=2",
		"access_%74oken", "Access_Token=1", "%zz=1&access_token=2", "access+token=1", "&;&", "access_token%=1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		var kept []string
		for _, part := range queryParts(rawQuery) {
			key, _, _ := strings.Cut(part, "=")
			if k, err := url.QueryUnescape(key); err == nil && k == tokenParam {
				if !namesToken(part) {
					t.Fatalf("%q decodes to access_token, namesToken says no", part)
				}
				continue
			}
			if !namesToken(part) {
				kept = append(kept, part)
			}
		}
		out := StripToken(rawQuery)
		var got []string
		for _, part := range queryParts(out) {
			if namesToken(part) {
				t.Fatalf("StripToken(%q) = %q keeps a token part %q", rawQuery, out, part)
			}
			got = append(got, part)
		}
		if out == "" {
			got = nil
		}
		if len(kept) == 1 && kept[0] == "" {
			kept = nil
		}
		if strings.Join(got, "\x00") != strings.Join(kept, "\x00") || len(got) != len(kept) {
			t.Fatalf("StripToken(%q) = %q: parts %q, want %q", rawQuery, out, got, kept)
		}
		if q := WithToken(rawQuery, "TOK"); !strings.HasSuffix(q, "access_token=TOK") || strings.Count(q, "access_token=TOK") != 1+strings.Count(out, "access_token=TOK") {
			t.Fatalf("WithToken(%q) = %q", rawQuery, q)
		}
	})
}

// A token is appended query-escaped: whatever it holds, WeChat reads one
// access_token, that token, and no other parameter.
func TestWithTokenEscapesTheToken(t *testing.T) {
	for _, tok := range []string{"FORGED&touser=attacker", "a;b=c", "x#frag", "sp ace+plus%25", "Plain_Token-0123"} {
		q := WithToken("scene=1", tok)
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatalf("WithToken(%q) = %q: %v", tok, q, err)
		}
		if got := v["access_token"]; len(got) != 1 || got[0] != tok || len(v) != 2 || v.Get("scene") != "1" {
			t.Errorf("WithToken(%q) = %q, read back as %v", tok, q, v)
		}
	}
	if q := WithToken("", "Plain_Token-0123"); q != "access_token=Plain_Token-0123" {
		t.Errorf("a token of WeChat's characters changed: %q", q)
	}
}
