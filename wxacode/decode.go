package wxacode

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// decodeObject decodes body, which must be one JSON object and nothing
// else, into map[string]any, []any, string, json.Number, bool and nil.
// encoding/json alone would let through what must not reach the key:
// duplicate keys (which one WeChat reads is unknown, so they are refused
// at any depth), and invalid UTF-8 or lone surrogate escapes, which it
// turns into U+FFFD and so would give different strings one key.
func decodeObject(body []byte) (map[string]any, error) {
	if !utf8.Valid(body) || hasLoneSurrogate(body) {
		return nil, refuse(wechat.DataFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, refuse(wechat.DataFormat)
	}
	obj, err := decodeMembers(dec, 1)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, refuse(wechat.DataFormat) // trailing data
	}
	return obj, nil
}

// decodeMembers decodes an object's members after its '{' and consumes its
// '}'.
func decodeMembers(dec *json.Decoder, depth int) (map[string]any, error) {
	obj := make(map[string]any)
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return nil, refuse(wechat.DataFormat)
		}
		if _, dup := obj[key]; dup {
			return nil, refuse(wechat.DataFormat)
		}
		v, err := decodeValue(dec, depth)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, refuse(wechat.DataFormat)
	}
	return obj, nil
}

// decodeValue decodes the next value; depth is that of its container.
func decodeValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, refuse(wechat.DataFormat)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxJSONDepth {
		return nil, refuse(wechat.DataFormat)
	}
	switch delim {
	case '{':
		return decodeMembers(dec, depth+1)
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
			return nil, refuse(wechat.DataFormat)
		}
		return arr, nil
	}
	return nil, refuse(wechat.DataFormat)
}

// hasLoneSurrogate reports whether body escapes half a UTF-16 surrogate
// pair (\ud800 not followed by \udc00-\udfff, or the latter alone). It may
// scan outside strings too: a backslash there makes the JSON invalid anyway.
func hasLoneSurrogate(body []byte) bool {
	pendingHigh := false
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			if pendingHigh {
				return true
			}
			continue
		}
		if i+1 >= len(body) || body[i+1] != 'u' {
			if pendingHigh {
				return true
			}
			i++ // skip the escaped character, which may be a backslash
			continue
		}
		r, ok := hex4(body[i+2:])
		switch {
		case !ok:
			return pendingHigh // invalid JSON, refused by the decoder
		case 0xD800 <= r && r < 0xDC00:
			if pendingHigh {
				return true
			}
			pendingHigh = true
		case 0xDC00 <= r && r < 0xE000:
			if !pendingHigh {
				return true
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return true
			}
		}
		i += 5
	}
	return pendingHigh
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
