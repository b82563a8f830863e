package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

type seen struct {
	mu       sync.Mutex
	requests []string
	ups      []bool
	unsealed map[string]int
}

func (s *seen) hooks() Hooks {
	return Hooks{
		Request: func(op, result string, _ time.Duration) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.requests = append(s.requests, op+" "+result)
		},
		Up: func(up bool) { s.mu.Lock(); s.ups = append(s.ups, up); s.mu.Unlock() },
		Unsealed: func(kind string) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.unsealed == nil {
				s.unsealed = map[string]int{}
			}
			s.unsealed[kind]++
		},
	}
}

// unsealedOf is how many values of kind the client did not believe.
func (s *seen) unsealedOf(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unsealed[kind]
}

func (s *seen) list() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.requests, ",")
}

func TestDoReportsOkMissAndKeysCarryTheAppInAHashTag(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "s3cret-pass"})
	rec := &seen{}
	c, err := New(Options{URL: srv.URL, Hooks: rec.hooks()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key := c.Key("wxapp", "img", "ab")
	if key != "wxa:{wxapp}:img:ab" {
		t.Fatalf("Key = %q", key)
	}
	ctx := context.Background()
	if err := c.Do(ctx, OpL2Set, func(ctx context.Context) error { return c.Redis().Set(ctx, key, "v", time.Minute).Err() }); err != nil {
		t.Fatal(err)
	}
	err = c.Do(ctx, OpL2Get, func(ctx context.Context) error { return c.Redis().Get(ctx, key+"x").Err() })
	if !errors.Is(err, redis.Nil) {
		t.Fatalf("missing key: %v, want redis.Nil", err)
	}
	if got := rec.list(); got != "l2_set ok,l2_get miss" {
		t.Errorf("reported %q", got)
	}
	if st := c.Status(); strings.Contains(st.Addr, "s3cret") || st.Addr != srv.Addr || !st.Up {
		t.Errorf("status %+v", st)
	}
}

func TestBreakerOpensAfterThreeFailuresAndProbesAfterTheCoolOff(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rec := &seen{}
	port := redistest.FreePort(t) // nothing listens: refused at once
	c, err := New(Options{URL: "redis://127.0.0.1:" + itoa(port) + "/0", Hooks: rec.hooks(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ping := func() error {
		return c.Do(context.Background(), OpLease, func(ctx context.Context) error { return c.Redis().Ping(ctx).Err() })
	}
	for range 3 {
		if err := ping(); err == nil || errors.Is(err, ErrSkipped) {
			t.Fatalf("ping a closed port: %v", err)
		}
	}
	if err := ping(); !errors.Is(err, ErrSkipped) || c.Status().Breaker != "open" {
		t.Fatalf("4th ping: %v, breaker %s: want skipped, open", err, c.Status().Breaker)
	}
	if got := rec.list(); got != "lease error,lease error,lease error,lease breaker_open" {
		t.Errorf("reported %q", got)
	}
	// Redis comes back; after the cool-off one probe goes through.
	srv := redistest.Start(t, redistest.Options{Port: port})
	_ = srv
	mu.Lock()
	now = now.Add(breakerCoolOff)
	mu.Unlock()
	if err := ping(); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if st := c.Status(); st.Breaker != "closed" || !st.Up {
		t.Errorf("after a good probe: %+v", st)
	}
	if len(rec.ups) != 2 || rec.ups[0] || !rec.ups[1] {
		t.Errorf("up hooks %v, want [false true]", rec.ups)
	}
}

func TestARequestSkipsRedisAfterItsFirstFailure(t *testing.T) {
	url := redistest.Silent(t)
	rec := &seen{}
	c, err := New(Options{URL: url, Timeout: 50 * time.Millisecond, Hooks: rec.hooks()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := Scope(context.Background())
	get := func() error {
		return c.Do(ctx, OpL2Get, func(ctx context.Context) error { return c.Redis().Get(ctx, "k").Err() })
	}
	if err := get(); err == nil || errors.Is(err, ErrSkipped) {
		t.Fatalf("first: %v, want a timeout", err)
	}
	if err := get(); !errors.Is(err, ErrSkipped) {
		t.Fatalf("second: %v, want skipped", err)
	}
	if got := rec.list(); got != "l2_get timeout" {
		t.Errorf("reported %q, want one timeout and nothing for the skipped call", got)
	}
}

func TestBadURLsAreRefusedWithoutEchoingThem(t *testing.T) {
	for _, u := range []string{"http://user:pw-secret@host:1", "redis://user:pw-secret@host:notaport/0"} {
		_, err := New(Options{URL: u})
		if err == nil || strings.Contains(err.Error(), "pw-secret") {
			t.Errorf("New(%q) = %v", u, err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestACAWithAPlaintextURLIsRefused(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{URL: "redis://127.0.0.1:1/0", CAFile: ca}); !errors.Is(err, errCAWithoutTLS) {
		t.Errorf("New = %v, want %v", err, errCAWithoutTLS)
	}
}

// A reply Redis itself gives (here WRONGTYPE) proves it reachable: it
// neither opens the breaker nor spends the request's budget.
func TestRedisRepliesDoNotOpenTheBreaker(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	c, err := New(Options{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := Scope(context.Background())
	srv.Command(t, "SET", "wxa:str", "x")
	for range 5 {
		err := c.Do(ctx, OpL2Get, func(ctx context.Context) error { return c.Redis().LPush(ctx, "wxa:str", "y").Err() })
		if err == nil || errors.Is(err, ErrSkipped) {
			t.Fatalf("LPUSH on a string: %v, want Redis's WRONGTYPE", err)
		}
	}
	if st := c.Status(); st.Breaker != "closed" {
		t.Errorf("breaker %s after five WRONGTYPE replies, want closed", st.Breaker)
	}
}

// A rediss:// URL that turns certificate verification off is refused by
// the client too (config refuses it first), for a plain and a Cluster URL.
func TestSkipVerifyIsRefused(t *testing.T) {
	if _, err := New(Options{URL: "rediss://127.0.0.1:1/0?skip_verify=true"}); !errors.Is(err, errSkipVerify) {
		t.Errorf("New = %v, want errSkipVerify", err)
	}
	// go-redis's Cluster URL knows no skip_verify: refused as invalid.
	if _, err := New(Options{URL: "rediss://127.0.0.1:1?addr=127.0.0.1:2&skip_verify=true"}); err == nil {
		t.Error("a Cluster URL with skip_verify was accepted")
	}
	c, err := New(Options{URL: "rediss://127.0.0.1:1/0?skip_verify=false"})
	if err != nil {
		t.Errorf("skip_verify=false: %v", err)
	} else {
		c.Close()
	}
}
