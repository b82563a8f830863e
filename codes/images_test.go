package codes_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"image/png"
	"testing"

	qrencode "github.com/skip2/go-qrcode"
)

// qrText is what the test codes encode, shaped like a real code's content.
const qrText = "https://wxa.example/getwxacodeunlimit?env=&page=pages%2Findex%2Findex&scene=bench&w=430"

// qrJPEG draws text as a QR code of width px, a full-colour JPEG as WeChat
// sends.
func qrJPEG(tb testing.TB, text string, width int) []byte {
	tb.Helper()
	q, err := qrencode.New(text, qrencode.Medium)
	if err != nil {
		tb.Fatal(err)
	}
	src := q.Image(width)
	rgba := image.NewRGBA(src.Bounds())
	for y := src.Bounds().Min.Y; y < src.Bounds().Max.Y; y++ {
		for x := src.Bounds().Min.X; x < src.Bounds().Max.X; x++ {
			rgba.Set(x, y, src.At(x, y))
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, rgba, &jpeg.Options{Quality: 92}); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// qrPNG draws text as a QR code of width px, a PNG as WeChat sends for a
// transparent code.
func qrPNG(tb testing.TB, text string, width int) []byte {
	tb.Helper()
	q, err := qrencode.New(text, qrencode.Medium)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, q.Image(width)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// corruptJPEG starts and ends as a JPEG does, with garbage between: whole
// by its markers, but not decodable.
func corruptJPEG() []byte {
	img := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte("not a jpeg scan "), 64)...)
	return append(img, 0xFF, 0xD9)
}

// corruptPNG is a PNG signature and an IEND chunk with garbage between.
func corruptPNG() []byte {
	img := append([]byte{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}, bytes.Repeat([]byte("not a png chunk "), 64)...)
	return append(img, 0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82)
}

// hugeJPEGHeader is a small, well-formed baseline JPEG declaring width x
// height: SOI, a quantization table, SOF0, a Huffman table pair, SOS, a few
// bytes of scan and EOI. A decoder that trusts it allocates width x height
// pixels before finding there is no data.
func hugeJPEGHeader(width, height int) []byte {
	b := []byte{0xFF, 0xD8}
	b = append(append(b, 0xFF, 0xDB, 0x00, 0x43, 0x00), bytes.Repeat([]byte{1}, 64)...)
	b = append(b, 0xFF, 0xC0, 0x00, 0x0B, 0x08, byte(height>>8), byte(height), byte(width>>8), byte(width), 0x01, 0x01, 0x11, 0x00)
	// DC and AC tables with one code each.
	b = append(b, 0xFF, 0xC4, 0x00, 0x14, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0xFF, 0xC4, 0x00, 0x14, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00)
	b = append(b, bytes.Repeat([]byte{0x00}, 64)...)
	return append(b, 0xFF, 0xD9)
}
