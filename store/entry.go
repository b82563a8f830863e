package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// objectName is PREFIX/APPID/KEYHEX, the object name of both backends
// (a directory's prefix is empty).
func objectName(prefix, app string, k cache.Key) string {
	h := hex.EncodeToString(k[:])
	if prefix == "" {
		return app + "/" + h
	}
	return prefix + "/" + app + "/" + h
}

// The plaintext of an object: a format byte, the time it was written (Unix
// seconds, uvarint), then the content type and disposition, each after its
// length as a uvarint, then the body to the end. Sealing authenticates it
// all, with the object's name.
const entryFormat = 1

func encodeEntry(at time.Time, e *cache.Entry) []byte {
	b := make([]byte, 1, 1+3*binary.MaxVarintLen64+len(e.ContentType)+len(e.ContentDisposition)+len(e.Body))
	b[0] = entryFormat
	b = binary.AppendUvarint(b, uint64(max(at.Unix(), 0)))
	b = binary.AppendUvarint(b, uint64(len(e.ContentType)))
	b = append(b, e.ContentType...)
	b = binary.AppendUvarint(b, uint64(len(e.ContentDisposition)))
	b = append(b, e.ContentDisposition...)
	return append(b, e.Body...)
}

func decodeEntry(b []byte) (time.Time, *cache.Entry, error) {
	if len(b) < 1 || b[0] != entryFormat {
		return time.Time{}, nil, errors.New("store: an object of another format")
	}
	at, n := binary.Uvarint(b[1:])
	if n <= 0 || at > 1<<62 {
		return time.Time{}, nil, errors.New("store: object framing is broken")
	}
	rest := b[1+n:]
	contentType, rest, err := readField(rest)
	if err != nil {
		return time.Time{}, nil, err
	}
	contentDisposition, body, err := readField(rest)
	if err != nil {
		return time.Time{}, nil, err
	}
	if len(body) == 0 {
		return time.Time{}, nil, errors.New("store: object without a body")
	}
	return time.Unix(int64(at), 0), cache.NewEntry(body, contentType, contentDisposition), nil
}

func readField(b []byte) (string, []byte, error) {
	n, size := binary.Uvarint(b)
	if size <= 0 || n > uint64(len(b)-size) {
		return "", nil, errors.New("store: object framing is broken")
	}
	end := size + int(n)
	return string(b[size:end]), b[end:], nil
}

// validApp reports an appid safe as one element of a path or object name.
func validApp(app string) bool {
	if app == "" || app == "." || app == ".." || len(app) > 128 {
		return false
	}
	for _, c := range app {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
