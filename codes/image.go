package codes

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"strconv"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// statusBadGateway is http.StatusBadGateway, spelled out: codes never
// imports net/http.
const statusBadGateway = 502

// ErrTransient marks a failure worth one retry: WeChat busy (errcode -1),
// HTTP 5xx, a transport error. The upstream side wraps such failures with
// it (fmt.Errorf("...: %w: %w", codes.ErrTransient, err)); a broken image
// is transient too.
var ErrTransient = errors.New("codes: transient upstream failure")

// ErrBrokenImage is the answer for an image that is not whole or does not
// decode. The errors Get returns for one wrap it, ErrTransient and the
// reason; a Fetch whose body could not be read whole returns one too (see
// ReadImage), so every broken image is counted in one place.
var ErrBrokenImage = &wechat.Error{Status: statusBadGateway, Code: wechat.SystemBusy,
	Msg: "system error: WeChat sent a broken image (wxa-sidecar)"}

// brokenImage is a refused image: it is ErrBrokenImage, transient, and
// says why.
type brokenImage struct{ reason error }

func (e *brokenImage) Error() string   { return ErrBrokenImage.Error() + ": " + e.reason.Error() }
func (e *brokenImage) Unwrap() []error { return []error{ErrBrokenImage, ErrTransient, e.reason} }

// BrokenImage returns an error for an image refused for reason: what a
// Fetch returns when the body it read is not an image it can hand over.
func BrokenImage(reason error) error { return &brokenImage{reason: reason} }

// MaxImageBytes bounds an upstream image; WeChat's weigh a few hundred KB.
const MaxImageBytes = 16 << 20

var errImageTooLarge = errors.New("codes: upstream image larger than " + strconv.Itoa(MaxImageBytes) + " bytes")

// ReadImage reads an image body of size bytes (-1: unknown) into a buffer
// of exactly its length: the cache charges an entry len(body), and the
// slack io.ReadAll's growth leaves behind (a quarter of it, or more) would
// be memory held but never counted. Its errors are broken images.
//
// Only a length up to exactImageRead is trusted for one allocation before
// the bytes arrive; a larger claim is read as it arrives (an upstream that
// announces 16 MiB and sends little holds little) and must then match.
func ReadImage(r io.Reader, size int64) ([]byte, error) {
	if size > MaxImageBytes {
		return nil, BrokenImage(errImageTooLarge)
	}
	if size >= 0 && size <= exactImageRead {
		img := make([]byte, size)
		if _, err := io.ReadFull(r, img); err != nil {
			return nil, BrokenImage(err)
		}
		return img, nil
	}
	img, err := io.ReadAll(io.LimitReader(r, MaxImageBytes+1))
	if err != nil {
		return nil, BrokenImage(err)
	}
	if len(img) > MaxImageBytes {
		return nil, BrokenImage(errImageTooLarge)
	}
	if size >= 0 && int64(len(img)) != size {
		return nil, BrokenImage(io.ErrUnexpectedEOF)
	}
	return append(make([]byte, 0, len(img)), img...), nil
}

// exactImageRead is the largest announced image read into one buffer of
// its length before it arrives: WeChat's codes weigh tens to a few hundred
// KB.
const exactImageRead = 1 << 20

var (
	jpegStart = []byte{0xFF, 0xD8, 0xFF}
	jpegEnd   = []byte{0xFF, 0xD9}
	pngStart  = []byte{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}
	// pngEnd is the IEND chunk: zero length, type, CRC.
	pngEnd = []byte{0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82}
)

// checkImage accepts only a whole image that decodes.
func checkImage(b []byte) error {
	if !isWholeImage(b) {
		return fmt.Errorf("%d bytes that are not a whole JPEG or PNG", len(b))
	}
	return checkDecodable(b)
}

// isWholeImage reports whether b starts and ends as a JPEG or a PNG, judged
// by the bytes, never by the label (WeChat labels PNGs image/jpeg).
func isWholeImage(b []byte) bool {
	return (bytes.HasPrefix(b, jpegStart) && bytes.HasSuffix(b, jpegEnd) && len(b) > len(jpegStart)+len(jpegEnd)) ||
		(bytes.HasPrefix(b, pngStart) && bytes.HasSuffix(b, pngEnd) && len(b) > len(pngStart)+len(pngEnd))
}

// maxImageSide bounds each side of an image the sidecar decodes. WeChat's
// codes are at most 1280 px; a hostile header of a few hundred bytes can
// declare 65000×65000 px, which the decoder would allocate (gigabytes)
// before finding there is no data.
const maxImageSide = 4096

// checkDecodable decodes a whole image once, with the decoder its magic
// bytes name (never the image registry, which would accept any format
// linked into the binary), after checking its declared size. Markers at
// both ends do not make an image: garbage between them would be stored
// and served to everyone for CACHE_TTL. JPEG has no checksum, so flipped
// bits in the scan data still decode: this catches garbage, not every
// corruption.
func checkDecodable(b []byte) error {
	var (
		decodeConfig func(io.Reader) (image.Config, error)
		decode       func(io.Reader) (image.Image, error)
		format       string
	)
	switch {
	case bytes.HasPrefix(b, jpegStart):
		decodeConfig, decode, format = jpeg.DecodeConfig, jpeg.Decode, "JPEG"
	case bytes.HasPrefix(b, pngStart):
		decodeConfig, decode, format = png.DecodeConfig, png.Decode, "PNG"
	default:
		return errors.New("codes: neither a JPEG nor a PNG")
	}
	cfg, err := decodeConfig(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("codes: %s header: %w", format, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxImageSide || cfg.Height > maxImageSide {
		return fmt.Errorf("codes: %s of %d×%d px, beyond %d×%d", format, cfg.Width, cfg.Height, maxImageSide, maxImageSide)
	}
	if _, err := decode(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("codes: %s does not decode: %w", format, err)
	}
	return nil
}
