package pregen

import (
	"bytes"
	"strconv"
	"strings"
)

// maxStem bounds a file's name before its suffix and extension, well
// under the 255 bytes most file systems allow: a getwxacode path may be
// 1024 bytes.
const maxStem = 200

// safeStem is name with every byte outside [A-Za-z0-9._=-] replaced by _,
// so no name can leave the output directory or mean anything to a shell.
// The extension (.jpg, .png) is always added after it, so not even ".."
// names a directory.
func safeStem(name string) string {
	if len(name) > maxStem {
		name = name[:maxStem]
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '=', c == '-':
		default:
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	if b[0] == '.' {
		// A leading dot would hide the file, and ".pregen-…" is the
		// temporary files' prefix, which a rerun deletes.
		b[0] = '_'
	}
	return string(b)
}

// stems gives each name a distinct safe stem, in input order: the first of
// several rows with one stem keeps it, the next get ~2, ~3... Stems are
// compared ignoring case, so they stay distinct on a case-insensitive file
// system (macOS, Windows). The same input always gives the same stems:
// that is what lets a second run find the files of the first.
type stems struct{ taken map[string]bool }

func newStems() *stems { return &stems{taken: map[string]bool{}} }

func (s *stems) assign(name string) string {
	stem := safeStem(name)
	candidate := stem
	for n := 2; s.taken[strings.ToLower(candidate)]; n++ {
		candidate = stem + "~" + strconv.Itoa(n)
	}
	s.taken[strings.ToLower(candidate)] = true
	return candidate
}

// imageExt is the extension of an image by its magic bytes, "" for neither
// a JPEG nor a PNG. WeChat labels both image/jpeg, so the label says
// nothing.
func imageExt(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF}):
		return ".jpg"
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return ".png"
	}
	return ""
}
