package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/seal"
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

// keyedClient is a client whose Keyring holds secrets (appid → secret),
// as main builds it from the configured apps.
func keyedClient(t *testing.T, url string, rec *seen, secrets map[string]string) *Client {
	t.Helper()
	keys, err := seal.NewKeyring(secrets, SealPurpose)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{URL: url, Hooks: rec.hooks(), Keys: keys})
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

// A value that does not open is never served: a miss, counted, and left
// in place (a replica of another version or secret may still read it; the
// next fetch overwrites it).
func TestL2EntryThatDoesNotOpenIsAMissCountedAndLeft(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	jpeg := "\xff\xd8\xff an image 0123456789 \xff\xd9"
	other := keyedClient(t, srv.URL, &seen{}, map[string]string{"wxapp": "another-secret"})
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, c *Client, v []byte) []byte
	}{
		{"a byte of the body flipped", func(_ *testing.T, _ *Client, v []byte) []byte { v[len(v)-20] ^= 0x01; return v }},
		{"a byte of the tag flipped", func(_ *testing.T, _ *Client, v []byte) []byte { v[len(v)-1] ^= 0x80; return v }},
		{"a byte of the nonce flipped", func(_ *testing.T, _ *Client, v []byte) []byte { v[3] ^= 0x80; return v }},
		{"truncated", func(_ *testing.T, _ *Client, v []byte) []byte { return v[:len(v)/2] }},
		{"the format byte only", func(_ *testing.T, _ *Client, v []byte) []byte { return v[:1] }},
		{"garbage", func(*testing.T, *Client, []byte) []byte { return []byte("garbage") }},
		{"another code's entry", func(t *testing.T, c *Client, _ []byte) []byte {
			l2 := NewL2(c, L2Options{TTL: time.Hour})
			if err := l2.Set(context.Background(), "wxapp", testKey(30), testEntry("\xff\xd8\xff another code \xff\xd9")); err != nil {
				t.Fatal(err)
			}
			v, _ := c.Redis().Get(context.Background(), imageKeyOf(testKey(30))).Bytes()
			return v
		}},
		{"sealed under another secret", func(t *testing.T, _ *Client, _ []byte) []byte {
			l2 := NewL2(other, L2Options{TTL: time.Hour})
			if err := l2.Set(context.Background(), "wxapp", testKey(3), testEntry(jpeg)); err != nil {
				t.Fatal(err)
			}
			v, _ := other.Redis().Get(context.Background(), imageKeyOf(testKey(3))).Bytes()
			return v
		}},
		{"the unsealed format before, HTML behind JPEG magic", func(*testing.T, *Client, []byte) []byte {
			return legacyEntry("text/html", "", "\xff\xd8\xff<script>alert(1)</script>")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &seen{}
			c := newTestClient(t, srv.URL, rec, nil)
			l2 := NewL2(c, L2Options{TTL: time.Hour})
			ctx := context.Background()
			if err := l2.Set(ctx, "wxapp", testKey(3), testEntry(jpeg)); err != nil {
				t.Fatal(err)
			}
			key := imageKeyOf(testKey(3))
			v, err := c.Redis().Get(ctx, key).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			bad := tc.damage(t, c, v)
			if err := c.Redis().Set(ctx, key, bad, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := l2.Get(ctx, "wxapp", testKey(3)); !errors.Is(err, cache.ErrNotFound) || got != nil {
				t.Fatalf("Get = %v, %v; want a miss", got, err)
			}
			if got, _ := c.Redis().Get(ctx, key).Bytes(); !bytes.Equal(got, bad) {
				t.Errorf("the value under %s was deleted or changed; want it left for the next fetch", key)
			}
			if n := rec.unsealedOf(UnsealedImage); n != 1 {
				t.Errorf("counted %d unsealed images, want 1", n)
			}
		})
	}
}

// legacyEntry is an entry in the unsealed format before (1, the sha256 of
// the rest, the headers, the body): what a Redis writer could forge.
func legacyEntry(contentType, disposition, body string) []byte {
	rest := binary.AppendUvarint(nil, uint64(len(contentType)))
	rest = append(rest, contentType...)
	rest = binary.AppendUvarint(rest, uint64(len(disposition)))
	rest = append(rest, disposition...)
	rest = append(rest, body...)
	sum := sha256.Sum256(rest)
	return append(append([]byte{1}, sum[:]...), rest...)
}

// A value of another format (another version of the sidecar's) is a miss
// left in place for it.
func TestL2EntryOfAnotherFormatIsAMissLeftInPlace(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := newTestClient(t, srv.URL, &seen{}, nil)
	l2 := NewL2(c, L2Options{TTL: time.Hour})
	ctx := context.Background()
	key := imageKeyOf(testKey(4))
	v := append([]byte{entryFormat + 1}, encodeEntry(testEntry("\xff\xd8\xff an image \xff\xd9"))...)
	c.Redis().Set(ctx, key, v, time.Hour)
	if got, err := l2.Get(ctx, "wxapp", testKey(4)); !errors.Is(err, cache.ErrNotFound) || got != nil {
		t.Fatalf("Get = %v, %v; want a miss", got, err)
	}
	if n := c.Redis().Exists(ctx, key).Val(); n != 1 {
		t.Error("another format's value was deleted")
	}
}

// Redis holds neither the body nor the headers of an image in clear.
func TestL2KeepsNothingInClear(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c := newTestClient(t, srv.URL, &seen{}, nil)
	l2 := NewL2(c, L2Options{TTL: time.Hour})
	ctx := context.Background()
	if err := l2.Set(ctx, "wxapp", testKey(6), testEntry("\xff\xd8\xff an image BODYMARK \xff\xd9")); err != nil {
		t.Fatal(err)
	}
	v, _ := c.Redis().Get(ctx, imageKeyOf(testKey(6))).Bytes()
	for _, clear := range []string{"BODYMARK", "image/jpeg", "code.jpeg", "\xff\xd8\xff"} {
		if bytes.Contains(v, []byte(clear)) {
			t.Errorf("Redis holds %q in clear", clear)
		}
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
