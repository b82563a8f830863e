package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the sidecar, not a recorder's buffer.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }

// BenchmarkCacheHit is the hot path: a POST whose code is cached, from
// request to response, without the network. The image sizes differ by the
// width; allocations must not.
func BenchmarkCacheHit(b *testing.B) {
	for _, width := range []int{280, 1280} {
		h := newHarness(&testing.T{}, harnessOptions{cache: true})
		defer h.srv.Close()
		body := fmt.Sprintf(`{"scene":"bench","page":"pages/index/index","width":%d}`, width)
		warm := h.postJSON(pathUnlimited, body)
		if warm.status != http.StatusOK {
			b.Fatalf("warm-up: %d", warm.status)
		}
		b.Run(fmt.Sprintf("image=%dKB", len(warm.body)>>10), func(b *testing.B) {
			w := &discardWriter{h: http.Header{}}
			req, _ := http.NewRequest(http.MethodPost, "/wxa/getwxacodeunlimit", nil)
			req.Header.Set("Content-Type", "application/json")
			reader := strings.NewReader(body)
			b.ReportAllocs()
			b.SetBytes(int64(len(warm.body)))
			for b.Loop() {
				reader.Reset(body)
				req.Body = io.NopCloser(reader)
				req.ContentLength = int64(len(body))
				clear(w.h)
				w.n = 0
				h.proxy.ServeHTTP(w, req)
				if w.status != http.StatusOK || w.n != len(warm.body) {
					b.Fatalf("status %d, %d bytes", w.status, w.n)
				}
			}
		})
	}
}

func TestCacheHitAllocationsDoNotGrowWithImageSize(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	allocs := map[int]float64{}
	for _, width := range []int{280, 1280} {
		body := fmt.Sprintf(`{"scene":"allocs","width":%d}`, width)
		if warm := h.postJSON(pathUnlimited, body); warm.status != http.StatusOK {
			t.Fatal(warm.status)
		}
		w := &discardWriter{h: http.Header{}}
		req, _ := http.NewRequest(http.MethodPost, "/wxa/getwxacodeunlimit", nil)
		allocs[width] = testing.AllocsPerRun(200, func() {
			req.Body = io.NopCloser(bytes.NewReader([]byte(body)))
			clear(w.h)
			h.proxy.ServeHTTP(w, req)
		})
	}
	if allocs[280] != allocs[1280] {
		t.Errorf("allocations per hit: %v for a small image, %v for a large one; want equal", allocs[280], allocs[1280])
	}
}
