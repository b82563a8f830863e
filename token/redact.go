package token

import (
	"errors"
	"net/url"
	"regexp"
)

// secretParam matches the query parameters that must never be logged:
// access_token (shown as a prefix), secret, js_code and code.
var secretParam = regexp.MustCompile(`(^|[?&\s"'])(access_token|secret|js_code|code)=([^&\s"']*)`)

// RedactURL returns s — a URL, a query or any text holding one — with the
// values of access_token, secret, js_code and code hidden.
func RedactURL(s string) string {
	return secretParam.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretParam.FindStringSubmatch(m)
		lead, name, value := sub[1], sub[2], sub[3]
		if name == "access_token" {
			return lead + name + "=" + Prefix(value)
		}
		if value == "" {
			return m
		}
		return lead + name + "=REDACTED"
	})
}

// RedactError returns err with every URL in its text redacted. A
// *url.Error — whose text carries the whole URL, secret and all — keeps its
// type, so Timeout and errors.Is still work.
func RedactError(err error) error {
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) && error(ue) == err {
		return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: RedactError(ue.Err)}
	}
	if text := err.Error(); RedactURL(text) != text {
		return &redacted{text: RedactURL(text), err: err}
	}
	return err
}

// redacted is an error whose text was stripped of secrets; Unwrap keeps
// errors.Is working (context.DeadlineExceeded and the like).
type redacted struct {
	text string
	err  error
}

func (r *redacted) Error() string { return r.text }
func (r *redacted) Unwrap() error { return r.err }
