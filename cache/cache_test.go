package cache

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func key(i int) Key { return sha256.Sum256([]byte(strconv.Itoa(i))) }

func newMemory(t testing.TB, maxBytes int64) *Memory {
	t.Helper()
	m, err := NewMemory(Options{MaxBytes: maxBytes, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func body(i, size int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i + j)
	}
	return b
}

func TestSetThenGetReturnsTheSameEntry(t *testing.T) {
	m := newMemory(t, 64<<20)
	e := NewEntry(body(1, 1000), "image/jpeg", "attachment")
	if !m.Set(key(1), e) {
		t.Fatal("Set declined an entry in an empty cache")
	}
	got, ok := m.Get(key(1))
	if !ok || &got.Body[0] != &e.Body[0] || got.ContentType != "image/jpeg" || got.ETag != e.ETag {
		t.Fatalf("Get = %v, %v; want the stored entry without a copy", got, ok)
	}
	if _, ok := m.Get(key(2)); ok {
		t.Error("Get found a key never set")
	}
	if s := m.Stats(); s.Entries != 1 || s.Stored != 1 || s.Bytes < 1000 || s.Hits != 1 || s.Misses != 1 {
		t.Errorf("Stats %+v", s)
	}
}

func TestKeysSharingAHashPrefixDoNotCollide(t *testing.T) {
	m := newMemory(t, 64<<20)
	a := key(1)
	b := a
	b[31] ^= 1 // same first 8 bytes: the same ristretto slot
	m.Set(a, NewEntry(body(1, 100), "image/jpeg", ""))
	if _, ok := m.Get(b); ok {
		t.Error("a different key with the same hash prefix was served another's image")
	}
}

func TestETagIsStrongAndFromTheBytes(t *testing.T) {
	a, b := NewEntry(body(1, 100), "", ""), NewEntry(body(1, 100), "x", "y")
	c := NewEntry(body(2, 100), "", "")
	if a.ETag != b.ETag || a.ETag == c.ETag || !strings.HasPrefix(a.ETag, `"`) || strings.HasPrefix(a.ETag, "W/") {
		t.Errorf("ETags %s %s %s", a.ETag, b.ETag, c.ETag)
	}
}

func TestSetReportsTruthfully(t *testing.T) {
	var evicted, rejected atomic.Int64
	m, err := NewMemory(Options{MaxBytes: 1 << 20, TTL: time.Hour,
		OnEvict: func() { evicted.Add(1) }, OnReject: func() { rejected.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Set(key(1), NewEntry(body(1, 600<<10), "", "")) {
		t.Error("an entry over a quarter of the cache was stored")
	}
	if s := m.Stats(); s.Rejected != 1 {
		t.Errorf("Rejected %d, want 1", s.Rejected)
	}
	// Fill well past capacity: every Set that says true is visible at once.
	for i := range 200 {
		k := key(i + 10)
		if m.Set(k, NewEntry(body(i, 20<<10), "", "")) {
			if _, ok := m.Get(k); !ok {
				t.Fatalf("Set %d said stored, Get did not find it", i)
			}
		}
	}
	s := m.Stats()
	if s.Bytes > 1<<20 {
		t.Errorf("cache holds %d bytes, over MaxBytes", s.Bytes)
	}
	if s.Evictions+s.Rejected == 0 {
		t.Error("filling the cache five times over neither evicted nor rejected anything")
	}
	// The callbacks feed the metrics: they must see every event.
	if uint64(evicted.Load()) != s.Evictions || uint64(rejected.Load()) != s.Rejected {
		t.Errorf("callbacks saw %d evictions and %d rejections, Stats %d and %d",
			evicted.Load(), rejected.Load(), s.Evictions, s.Rejected)
	}
}

func TestConcurrentGetAndSet(t *testing.T) {
	m := newMemory(t, 8<<20)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := key(i % 50)
				if e, ok := m.Get(k); ok && len(e.Body) != 1000 {
					t.Error("torn entry")
				}
				m.Set(k, NewEntry(body(g, 1000), "", ""))
			}
		})
	}
	wg.Wait()
}

func TestGetHitDoesNotAllocate(t *testing.T) {
	m := newMemory(t, 64<<20)
	k := key(1)
	m.Set(k, NewEntry(body(1, 500<<10), "image/jpeg", ""))
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := m.Get(k); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("a hit allocates %v times, want 0", allocs)
	}
}

func BenchmarkGetHit(b *testing.B) {
	for _, size := range []int{50 << 10, 500 << 10} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			m := newMemory(b, 64<<20)
			k := key(1)
			m.Set(k, NewEntry(body(1, size), "image/jpeg", ""))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := m.Get(k); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// TestResidentMemoryStaysBounded runs testdata/rssfill — a real process,
// built without the race detector, with main's memory limit — which
// inserts ten times MaxBytes of distinct images: its resident memory must
// stay under 1.3 × MaxBytes + 30 MiB.
func TestResidentMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: takes seconds")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs Linux /proc")
	}
	const maxBytes = 64 << 20
	bin := filepath.Join(t.TempDir(), "rssfill")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/rssfill").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-max", strconv.Itoa(maxBytes))
	cmd.Env = append(os.Environ(), "GOMEMLIMIT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rssfill: %v\n%s", err, out)
	}
	var rssKB, peakKB, hwmKB, cacheBytes, entries int64
	if _, err := fmt.Sscanf(string(out), "RSS_KB=%d PEAK_KB=%d HWM_KB=%d CACHE_BYTES=%d ENTRIES=%d",
		&rssKB, &peakKB, &hwmKB, &cacheBytes, &entries); err != nil {
		t.Fatalf("no figures from rssfill: %v\n%s", err, out)
	}
	limitKB := int64(maxBytes*13/10+30<<20) >> 10
	t.Logf("MaxBytes %d MiB: RSS %d MiB at the end, peak sampled %d MiB, VmHWM %d MiB, bound %d MiB; cache %d MiB in %d entries",
		maxBytes>>20, rssKB>>10, peakKB>>10, hwmKB>>10, limitKB>>10, cacheBytes>>20, entries)
	if peakKB > limitKB || hwmKB > limitKB {
		t.Errorf("resident memory peaked at %d KiB (VmHWM %d KiB), want under %d KiB", peakKB, hwmKB, limitKB)
	}
}

func TestPeekFindsWithoutCounting(t *testing.T) {
	m := newMemory(t, 64<<20)
	e := NewEntry(body(1, 1000), "image/jpeg", "")
	m.Set(key(1), e)
	if got, ok := m.Peek(key(1)); !ok || got.ETag != e.ETag {
		t.Fatalf("Peek = %v, %v; want the stored entry", got, ok)
	}
	if _, ok := m.Peek(key(2)); ok {
		t.Error("Peek found a key never set")
	}
	if s := m.Stats(); s.Hits != 0 || s.Misses != 0 {
		t.Errorf("after two Peeks: hits %d misses %d, want 0 and 0", s.Hits, s.Misses)
	}
}
