package pregen

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
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
	stem := string(b)
	if base, _, _ := strings.Cut(stem, "."); windowsReserved(base) {
		// CON.jpg, con.tar.png: Windows reads the name before the first
		// dot as a device, whatever the case and the extension, so such a
		// file cannot be unzipped or copied there. The suffix goes before
		// that dot.
		stem = base + "_" + stem[len(base):]
	}
	return stem
}

// windowsReserved reports the device names Windows reserves, in any case.
func windowsReserved(base string) bool {
	switch strings.ToUpper(base) {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(base) == 4 {
		prefix := strings.ToUpper(base[:3])
		return (prefix == "COM" || prefix == "LPT") && '1' <= base[3] && base[3] <= '9'
	}
	return false
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

// maxImageSide bounds each side of an image pregen decodes. WeChat's codes
// are at most 1280 px; a header of a few hundred bytes can declare
// 65000×65000 px, which the decoder would allocate before finding there is
// no data.
const maxImageSide = 4096

// checkImage decodes b whole, with the decoder its magic bytes name (never
// the image registry), after checking its declared size: a body is saved
// as .jpg or .png only if it is one. JPEG has no checksum, so this catches
// garbage and truncation, not every flipped bit.
func checkImage(b []byte) error {
	var (
		decodeConfig func(io.Reader) (image.Config, error)
		decode       func(io.Reader) (image.Image, error)
	)
	switch imageExt(b) {
	case ".jpg":
		decodeConfig, decode = jpeg.DecodeConfig, jpeg.Decode
	case ".png":
		decodeConfig, decode = png.DecodeConfig, png.Decode
	default:
		return errors.New("neither a JPEG nor a PNG")
	}
	cfg, err := decodeConfig(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxImageSide || cfg.Height > maxImageSide {
		return fmt.Errorf("%d×%d px, beyond %d×%d", cfg.Width, cfg.Height, maxImageSide, maxImageSide)
	}
	if _, err := decode(bytes.NewReader(b)); err != nil {
		return err
	}
	return nil
}
