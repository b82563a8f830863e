package proxy

import (
	"bytes"
	"net/http"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// Markers at both ends are not an image: the garbage between them must not
// be stored, and the retry's real image is what the caller gets.
func TestUndecodableImageIsRetriedNotCached(t *testing.T) {
	faults := []struct {
		name  string
		fault wechattest.Fault
	}{
		{"JPEG markers around garbage", wechattest.FaultCorruptJPEG},
		{"JPEG header declaring 65000x65000", wechattest.FaultHugeDimensions},
	}
	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			h := newHarness(t, harnessOptions{cache: true})
			h.currentToken(demoApp)
			body := `{"scene":"undecodable` + string(rune('0'+i)) + `"}`
			h.fake.FailNext(pathUnlimited, 1, f.fault)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp := h.postJSON(pathUnlimited, body)
			runtime.ReadMemStats(&after)
			if resp.status != http.StatusOK || resp.errcode() != 0 {
				t.Fatalf("status %d body %s, want the retry's image", resp.status, truncate(resp.body, 100))
			}
			decodeQR(t, resp.body)
			if got := h.fake.Calls(pathUnlimited); got != 2 {
				t.Errorf("%d upstream calls, want 2 (the broken image and its retry)", got)
			}
			if got := resp.header.Get("Cache-Status"); got != cacheStatusStored {
				t.Errorf("Cache-Status %q, want %q", got, cacheStatusStored)
			}
			if got := testutil.ToFloat64(h.metrics.UpstreamRequests.WithLabelValues(pathUnlimited, "broken_image")); got != 1 {
				t.Errorf("upstream_requests_total{outcome=broken_image} = %v, want 1", got)
			}
			// A decoder that trusted the header would allocate 65000² bytes
			// (4 GB) at the least; everything else here is a few MB.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<20 {
				t.Errorf("the request allocated %d MB", grew>>20)
			}
			again := h.postJSON(pathUnlimited, body)
			if again.header.Get("Cache-Status") != cacheStatusHit || !bytes.Equal(again.body, resp.body) {
				t.Errorf("next request: Cache-Status %q, want a hit on the retry's image", again.header.Get("Cache-Status"))
			}
		})
	}
}

func TestTransparentPNGIsDecodedAndCached(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true})
	resp := h.postJSON(pathUnlimited, `{"scene":"hyaline","is_hyaline":true}`)
	if resp.status != http.StatusOK || !bytes.HasPrefix(resp.body, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("status %d, body starts %q, want a PNG", resp.status, truncate(resp.body, 8))
	}
	if got := resp.header.Get("Cache-Status"); got != cacheStatusStored {
		t.Errorf("Cache-Status %q, want %q", got, cacheStatusStored)
	}
	decodeQR(t, resp.body)
}
