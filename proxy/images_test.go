package proxy

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"net/http"
	"runtime"
	"strings"
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
	if resp.status != http.StatusOK || !bytes.HasPrefix(resp.body, pngStart) {
		t.Fatalf("status %d, body starts %q, want a PNG", resp.status, truncate(resp.body, 8))
	}
	if got := resp.header.Get("Cache-Status"); got != cacheStatusStored {
		t.Errorf("Cache-Status %q, want %q", got, cacheStatusStored)
	}
	decodeQR(t, resp.body)
}

// pngWithHeader is a PNG signature, an IHDR declaring width x height, one
// IDAT of data and IEND: whole by its markers.
func pngWithHeader(width, height uint32, data []byte) []byte {
	chunk := func(typ string, payload []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
		b = append(b, typ...)
		b = append(b, payload...)
		return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(append([]byte(typ), payload...)))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, width)
	ihdr = binary.BigEndian.AppendUint32(ihdr, height)
	ihdr = append(ihdr, 8, 0, 0, 0, 0) // 8-bit greyscale
	b := append([]byte{}, pngStart...)
	b = append(b, chunk("IHDR", ihdr)...)
	b = append(b, chunk("IDAT", data)...)
	return append(b, chunk("IEND", nil)...)
}

func TestCheckDecodable(t *testing.T) {
	h := newHarness(t, harnessOptions{})
	jpegImage := h.postJSON(pathUnlimited, `{"scene":"check"}`).body
	pngImage := h.postJSON(pathUnlimited, `{"scene":"check","is_hyaline":true}`).body
	tests := []struct {
		name    string
		img     []byte
		wantErr string // "" for none
	}{
		{"JPEG from the fake", jpegImage, ""},
		{"PNG from the fake", pngImage, ""},
		{"JPEG cut short but ending FF D9", append(append([]byte{}, jpegImage[:len(jpegImage)/2]...), 0xFF, 0xD9), "JPEG does not decode"},
		{"PNG header declaring 65000x65000", pngWithHeader(65000, 65000, []byte{0x78, 0x9c}), "PNG of 65000×65000 px"},
		{"PNG header 4097 px wide", pngWithHeader(4097, 1, []byte{0x78, 0x9c}), "PNG of 4097×1 px"},
		{"PNG with garbage data", pngWithHeader(100, 100, []byte("not zlib")), "PNG does not decode"},
		{"GIF", []byte("GIF89a...;"), "neither a JPEG nor a PNG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkDecodable(tt.img)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}
