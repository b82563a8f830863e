package token

// maxValueLen is the longest token the sidecar uses: WeChat asks callers
// to keep at least 512 characters for one.
const maxValueLen = 512

// ValidValue reports whether v can be a token WeChat issued: 1 to 512
// characters, each a letter, a digit, or one of "-._~" (WeChat's are
// letters, digits, '_' and '-'; '.' and '~' are allowed as the rest of
// URL's unreserved set, which a query carries as they are). Anything else
// (a '&', a '=', a space, a '#') is not WeChat's, and is never sent to it
// or handed out: a token read from a shared store that fails this was
// written by someone else.
func ValidValue(v string) bool {
	if len(v) == 0 || len(v) > maxValueLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '.', c == '~':
		default:
			return false
		}
	}
	return true
}
