package codes

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
)

// An upstream that announces a large image and sends little makes the
// sidecar hold what arrived, not what was announced.
func TestReadImageHoldsWhatArrivedNotWhatWasClaimed(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadImage(bytes.NewReader(make([]byte, 100)), MaxImageBytes)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrBrokenImage) {
		t.Fatalf("err %v, want a broken image (short of its announced length)", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Errorf("reading 100 bytes announced as %d allocated %d bytes", MaxImageBytes, grew)
	}
}
