package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/config"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// discardWriter keeps nothing, so the benchmark measures the handlers.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.status = code }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }

// BenchmarkCacheHitGuarded is proxy's BenchmarkCacheHit through the API
// port's handler as main wires it (drain guard around the proxy), against
// the proxy alone: the difference is what the guard costs a hit.
func BenchmarkCacheHitGuarded(b *testing.B) {
	fake := wechattest.NewServer(wechattest.Options{})
	defer fake.Close()
	cfg, err := config.Load(map[string]string{"WECHAT_APP_ID": wechattest.DemoAppID,
		"WECHAT_APP_SECRET": wechattest.DemoSecret, "WECHAT_API_URL": fake.URL})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.DiscardHandler), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := `{"scene":"bench","page":"pages/index/index","width":280}`
	for name, h := range map[string]http.Handler{"proxy": s.proxy, "guarded": s.api.Handler} {
		b.Run(name, func(b *testing.B) {
			w := &discardWriter{h: http.Header{}}
			// As net/http's: the connection's context, then the request's.
			ctx := s.api.ConnContext(context.Background(), nil)
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "/wxa/getwxacodeunlimit", nil)
			req.Header.Set("Content-Type", "application/json")
			reader := strings.NewReader(body)
			b.ReportAllocs()
			for b.Loop() {
				reader.Reset(body)
				req.Body = io.NopCloser(reader)
				req.ContentLength = int64(len(body))
				clear(w.h)
				w.n = 0
				h.ServeHTTP(w, req)
				if w.status != http.StatusOK || w.n == 0 {
					b.Fatalf("status %d, %d bytes", w.status, w.n)
				}
			}
		})
	}
}
