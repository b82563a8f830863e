package codes_test

import (
	"fmt"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/codes"
)

// BenchmarkDecodeCheck is what the miss path pays to refuse undecodable
// images: one DecodeConfig and one Decode per image WeChat sends. Hits
// never pay it. The images are drawn as the fake WeChat draws a 430 px
// code (a JPEG at quality 92; a PNG for is_hyaline).
func BenchmarkDecodeCheck(b *testing.B) {
	images := []struct {
		name string
		img  []byte
	}{
		{"jpeg-430px", qrJPEG(b, qrText, 430)},
		{"png-hyaline-430px", qrPNG(b, qrText, 430)},
	}
	for _, im := range images {
		b.Run(fmt.Sprintf("%s-%dB", im.name, len(im.img)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(im.img)))
			for b.Loop() {
				if err := codes.CheckDecodable(im.img); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
