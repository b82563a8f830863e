package fleet

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

// BenchmarkL2Get is a shared hit's Redis part: one GET of a 20 KB image
// and its sha256 check, on loopback.
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
