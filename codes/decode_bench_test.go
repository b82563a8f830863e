package codes_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
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

// BenchmarkGetHit is what codes adds to an L1 hit (cache's BenchmarkGetHit
// is the lookup alone): a Fetcher the caller already holds, prebuilt hooks.
func BenchmarkGetHit(b *testing.B) {
	l1, err := cache.NewMemory(cache.Options{MaxBytes: 64 << 20, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l1.Close()
	var lookups atomic.Int64
	c := codes.New(codes.Options{L1: l1, Hooks: codes.Hooks{Lookup: func(string) { lookups.Add(1) }}})
	fetch := answering(qrJPEG(b, qrText, 430))
	ctx := context.Background()
	if _, err := c.Get(ctx, key(1), unlimited, fetch); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if res, _ := c.Get(ctx, key(1), unlimited, fetch); res.Status != codes.Hit {
			b.Fatalf("status %v, want hit", res.Status)
		}
	}
}
