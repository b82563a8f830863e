package fleet

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

// logBuffer collects a client's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newTestClient is one replica's client of url, reporting to rec and logs.
func newTestClient(t *testing.T, url string, rec *seen, logs *logBuffer) *Client {
	t.Helper()
	o := Options{URL: url, Hooks: rec.hooks()}
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testKey(i int) cache.Key { return cache.Key{byte(i), 0xF1, 0xEE, byte(i >> 8)} }

func imageKeyOf(k cache.Key) string { return "wxa:{wxapp}:img:" + hex.EncodeToString(k[:]) }

func testEntry(body string) *cache.Entry {
	return cache.NewEntry([]byte(body), "image/jpeg", `attachment; filename="code.jpeg"`)
}

func sameEntry(a, b *cache.Entry) bool {
	return a != nil && b != nil && bytes.Equal(a.Body, b.Body) && a.ContentType == b.ContentType &&
		a.ContentDisposition == b.ContentDisposition && a.ETag == b.ETag
}

// An image stored by one replica is read back whole by another, under
// wxa:{app}:img:<key>, for CACHE_TTL; another app's key is another entry.
func TestL2RoundTripUnderTheAppsKeyForTheTTL(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	recA, recB := &seen{}, &seen{}
	a := NewL2(newTestClient(t, srv.URL, recA, nil), L2Options{TTL: time.Hour})
	b := NewL2(newTestClient(t, srv.URL, recB, nil), L2Options{TTL: time.Hour})
	ctx := context.Background()
	e := testEntry("\xff\xd8\xff an image 0123456789 \xff\xd9")
	if err := a.Set(ctx, "wxapp", testKey(1), e); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx, "wxapp", testKey(1))
	if err != nil || !sameEntry(got, e) {
		t.Fatalf("Get = %+v, %v; want the entry stored", got, err)
	}
	if got.Header["Content-Type"][0] != "image/jpeg" || got.Header["Etag"][0] != e.ETag {
		t.Errorf("the entry read lost its headers: %v", got.Header)
	}
	for _, miss := range []struct {
		app string
		k   cache.Key
	}{{"wxapp", testKey(2)}, {"wxother", testKey(1)}} {
		if got, err := b.Get(ctx, miss.app, miss.k); !errors.Is(err, cache.ErrNotFound) || got != nil {
			t.Errorf("Get(%s, %x) = %v, %v; want ErrNotFound", miss.app, miss.k[:2], got, err)
		}
	}
	key := imageKeyOf(testKey(1))
	pttl, err := strconv.Atoi(srv.Command(t, "PTTL", key))
	if err != nil || pttl <= 0 || pttl > int(time.Hour/time.Millisecond) {
		t.Errorf("PTTL %s = %d (%v), want within CACHE_TTL", key, pttl, err)
	}
	if got := recA.list() + " | " + recB.list(); got != "l2_set ok | l2_get ok,l2_get miss,l2_get miss" {
		t.Errorf("reported %q", got)
	}
}

// A value that fails its check is never served: a miss, logged, and the
// key deleted, so the next flight fetches and stores a good one.
func TestL2EntryFailingItsCheckIsAMissLoggedAndDeleted(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	for _, tc := range []struct {
		name   string
		damage func(v []byte) []byte
	}{
		{"a byte of the body flipped", func(v []byte) []byte { v[len(v)-5] ^= 0x01; return v }},
		{"a byte of the content type flipped", func(v []byte) []byte { v[digestEnd+1] ^= 0x20; return v }},
		{"a byte of the digest flipped", func(v []byte) []byte { v[3] ^= 0x80; return v }},
		{"truncated", func(v []byte) []byte { return v[:len(v)/2] }},
		{"shorter than a digest", func(v []byte) []byte { return v[:10] }},
		{"garbage", func([]byte) []byte { return []byte("garbage") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			c := newTestClient(t, srv.URL, &seen{}, logs)
			l2 := NewL2(c, L2Options{TTL: time.Hour})
			ctx := context.Background()
			if err := l2.Set(ctx, "wxapp", testKey(3), testEntry("\xff\xd8\xff an image 0123456789 \xff\xd9")); err != nil {
				t.Fatal(err)
			}
			key := imageKeyOf(testKey(3))
			v, err := c.Redis().Get(ctx, key).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Redis().Set(ctx, key, tc.damage(v), time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := l2.Get(ctx, "wxapp", testKey(3)); !errors.Is(err, cache.ErrNotFound) || got != nil {
				t.Fatalf("Get = %v, %v; want a miss", got, err)
			}
			if n := c.Redis().Exists(ctx, key).Val(); n != 0 {
				t.Errorf("the damaged value is still under %s", key)
			}
			if !strings.Contains(logs.String(), "failed its check") {
				t.Errorf("nothing logged: %q", logs.String())
			}
		})
	}
}

// A value of another format (another version of the sidecar's) is a miss
// left in place for it.
func TestL2EntryOfAnotherFormatIsAMissLeftInPlace(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := newTestClient(t, srv.URL, &seen{}, nil)
	l2 := NewL2(c, L2Options{TTL: time.Hour})
	ctx := context.Background()
	key := imageKeyOf(testKey(4))
	v := encodeEntry(testEntry("\xff\xd8\xff an image \xff\xd9"))
	v[0] = entryFormat + 1
	c.Redis().Set(ctx, key, v, time.Hour)
	if got, err := l2.Get(ctx, "wxapp", testKey(4)); !errors.Is(err, cache.ErrNotFound) || got != nil {
		t.Fatalf("Get = %v, %v; want a miss", got, err)
	}
	if n := c.Redis().Exists(ctx, key).Val(); n != 1 {
		t.Error("another format's value was deleted")
	}
}

// A Redis that is gone is a fault, not a miss: codes counts it as one and
// fetches, but the difference is reported.
func TestL2RedisDownIsAFault(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	l2 := NewL2(newTestClient(t, srv.URL, &seen{}, nil), L2Options{TTL: time.Hour})
	srv.Stop()
	ctx := context.Background()
	if _, err := l2.Get(ctx, "wxapp", testKey(5)); err == nil || errors.Is(err, cache.ErrNotFound) {
		t.Errorf("Get = %v, want a fault", err)
	}
	if err := l2.Set(ctx, "wxapp", testKey(5), testEntry("x")); err == nil {
		t.Error("Set succeeded on a Redis that is gone")
	}
}
