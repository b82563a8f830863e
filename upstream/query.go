package upstream

import (
	"iter"
	"net/url"
	"strings"
)

// tokenParam is the query parameter WeChat reads the token from.
const tokenParam = "access_token"

// queryParts yields each part of rawQuery with the separator before it (0
// for the first). Both '&' and ';' separate, as they do for some servers,
// so a token hidden behind a ';' is found too.
func queryParts(rawQuery string) iter.Seq2[byte, string] {
	return func(yield func(byte, string) bool) {
		var sep byte
		for {
			i := strings.IndexAny(rawQuery, "&;")
			if i < 0 {
				yield(sep, rawQuery)
				return
			}
			if !yield(sep, rawQuery[:i]) {
				return
			}
			sep, rawQuery = rawQuery[i], rawQuery[i+1:]
		}
	}
}

// namesToken reports whether a query part's key is access_token once
// decoded: WeChat decodes keys, so access%5Ftoken and access_%74oken are
// the same parameter. Decoding is lenient, as a lenient server's would be
// (a valid %XX decoded, '+' a space, any other byte as is), and exact:
// Access_Token is another name.
func namesToken(part string) bool {
	key, _, _ := strings.Cut(part, "=")
	if !strings.ContainsAny(key, "%+") {
		return key == tokenParam
	}
	n := 0
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '%' && i+2 < len(key) && ishex(key[i+1]) && ishex(key[i+2]):
			c = unhex(key[i+1])<<4 | unhex(key[i+2])
			i += 2
		case c == '+':
			c = ' '
		}
		if n == len(tokenParam) || tokenParam[n] != c {
			return false
		}
		n++
	}
	return n == len(tokenParam)
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// StripToken returns rawQuery without any access_token part, however
// spelled, and otherwise byte for byte: order, empty parts, ';' and
// escaping as the caller sent them (signed requests depend on it).
func StripToken(rawQuery string) string {
	// Without a '%' the key can only be spelled literally.
	if !strings.Contains(rawQuery, tokenParam) && !strings.Contains(rawQuery, "%") {
		return rawQuery
	}
	var b strings.Builder
	b.Grow(len(rawQuery))
	wrote := false
	for sep, part := range queryParts(rawQuery) {
		if namesToken(part) {
			continue
		}
		if wrote {
			b.WriteByte(sep)
		}
		b.WriteString(part)
		wrote = true
	}
	return b.String()
}

// WithToken returns rawQuery with every access_token of the caller's
// removed and tok appended, query-escaped, so WeChat sees exactly one
// token, ours, and nothing a token could smuggle in ("&touser=...").
func WithToken(rawQuery, tok string) string {
	rest := StripToken(rawQuery)
	if rest == "" {
		return tokenParam + "=" + url.QueryEscape(tok)
	}
	return rest + "&" + tokenParam + "=" + url.QueryEscape(tok)
}

// CallerTokens yields the decoded values of the access_token parts of
// rawQuery, found as StripToken finds them, so the token that picks the
// app is one of those that will be removed.
func CallerTokens(rawQuery string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, part := range queryParts(rawQuery) {
			if !namesToken(part) {
				continue
			}
			_, value, _ := strings.Cut(part, "=")
			if v, err := url.QueryUnescape(value); err == nil && v != "" && !yield(v) {
				return
			}
		}
	}
}
