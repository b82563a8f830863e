package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

// BenchmarkL2Get is a shared hit's Redis part: one GET of a 20 KB image
// and its check (its seal opened), on loopback.
func BenchmarkL2Get(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	c, err := New(Options{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	l2 := NewL2(c, L2Options{})
	body := make([]byte, 20<<10)
	rand.Read(body)
	ctx := context.Background()
	if err := l2.Set(ctx, "wxapp", testKey(1), cache.NewEntry(body, "image/jpeg", "")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l2.Get(ctx, "wxapp", testKey(1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlightLease is what a miss pays for the fleet's flight over a
// local one: the lease taken and released (two round trips), load free.
func BenchmarkFlightLease(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	c, err := New(Options{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	e := cache.NewEntry([]byte("img"), "image/jpeg", "")
	load := func(context.Context) (*cache.Entry, error) { return e, nil }
	for _, tc := range []struct {
		name   string
		flight codes.Flight
	}{{"local", codes.LocalFlight()}, {"fleet", NewFlight(c, FlightOptions{})}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := tc.flight.Run(context.Background(), "wxapp", testKey(2), load); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkL2Miss is the Redis part of a miss, WeChat's call aside: the
// 45029 memory looked at, the lease taken, L2 looked at (a miss), the
// 20 KB image stored, the lease released. Each iteration is a new code.
func BenchmarkL2Miss(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	// A timeout a busy host does not reach: the benchmark measures the
	// round trips, not the breaker.
	c, err := New(Options{URL: srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	l2 := NewL2(c, L2Options{TTL: 2 * time.Second})
	refusals := NewRefusals(c, RefusalsOptions{TTL: time.Hour})
	flight := NewFlight(c, FlightOptions{})
	body := make([]byte, 20<<10)
	rand.Read(body)
	e := cache.NewEntry(body, "image/jpeg", "")
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		k := cache.Key{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24), 0xB0}
		if refusals.Refused(ctx, "wxapp", k) {
			b.Fatal("refused")
		}
		_, _, err := flight.Run(ctx, "wxapp", k, func(ctx context.Context) (*cache.Entry, error) {
			if _, err := l2.Get(ctx, "wxapp", k); !errors.Is(err, cache.ErrNotFound) {
				return nil, fmt.Errorf("l2 get: %v, want a miss", err)
			}
			return e, l2.Set(ctx, "wxapp", k, e)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkL2Codec is the CPU an entry costs beside Redis: a 20 KB image
// encoded and sealed for its key (a Set), then opened and decoded (a Get).
func BenchmarkL2Codec(b *testing.B) {
	c, err := New(Options{URL: "redis://127.0.0.1:1/0"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	body := make([]byte, 20<<10)
	rand.Read(body)
	e := cache.NewEntry(body, "image/jpeg", "")
	key := imageKey(c, "wxapp", testKey(7))
	b.ReportAllocs()
	for b.Loop() {
		sealed, err := c.seal("wxapp", encodeEntry(e), key)
		if err != nil {
			b.Fatal(err)
		}
		plain, ok := c.open(UnsealedImage, "wxapp", sealed, key)
		if !ok {
			b.Fatal("does not open")
		}
		if _, err := decodeEntry(plain); err != nil {
			b.Fatal(err)
		}
	}
}
