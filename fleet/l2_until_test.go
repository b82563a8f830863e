package fleet

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

// An entry with an Until (a link) lives in Redis until then, not for
// CACHE_TTL, and another replica reads its Until back; one already past
// it is not stored.
func TestL2KeepsAnEntryUntilItsUntil(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := NewL2(newTestClient(t, srv.URL, &seen{}, nil), L2Options{TTL: time.Hour})
	b := NewL2(newTestClient(t, srv.URL, &seen{}, nil), L2Options{TTL: time.Hour})
	ctx := context.Background()
	until := time.Now().Add(10 * time.Minute).Truncate(time.Millisecond)
	link := cache.NewEntryUntil([]byte(`{"errcode":0,"errmsg":"ok","openlink":"weixin://dl/business/?t=abc"}`),
		"application/json; encoding=utf-8", "", until)
	if err := a.Set(ctx, "wxapp", testKey(1), link); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx, "wxapp", testKey(1))
	if err != nil || !sameEntry(got, link) || !got.Until.Equal(until) {
		t.Fatalf("Get = %+v, %v; want the link until %v", got, err, until)
	}
	pttl, err := strconv.Atoi(srv.Command(t, "PTTL", imageKeyOf(testKey(1))))
	if err != nil || pttl <= int((9*time.Minute).Milliseconds()) || pttl > int((10*time.Minute).Milliseconds()) {
		t.Errorf("PTTL %d (%v), want the 10 minutes to its Until, not CACHE_TTL", pttl, err)
	}
	// A permanent link's Until is 30 days away: beyond CACHE_TTL.
	far := time.Now().Add(30 * 24 * time.Hour)
	if err := a.Set(ctx, "wxapp", testKey(2), cache.NewEntryUntil([]byte("link"), "application/json", "", far)); err != nil {
		t.Fatal(err)
	}
	if pttl, _ := strconv.Atoi(srv.Command(t, "PTTL", imageKeyOf(testKey(2)))); pttl < int((29 * 24 * time.Hour).Milliseconds()) {
		t.Errorf("PTTL %d ms for an entry kept 30 days", pttl)
	}
	if err := a.Set(ctx, "wxapp", testKey(3), cache.NewEntryUntil([]byte("gone"), "application/json", "", time.Now().Add(-time.Second))); err != nil {
		t.Fatal(err)
	}
	if n := srv.Command(t, "EXISTS", imageKeyOf(testKey(3))); n != "0" {
		t.Errorf("an entry past its Until was stored (EXISTS %s)", n)
	}
	// A code image keeps format 1, which older replicas read.
	if err := a.Set(ctx, "wxapp", testKey(4), testEntry("\xff\xd8\xff img \xff\xd9")); err != nil {
		t.Fatal(err)
	}
	if v := srv.Command(t, "GET", imageKeyOf(testKey(4))); v == "" || v[0] != entryFormat {
		t.Errorf("a code image is stored as format %q, want %d", v[:1], entryFormat)
	}
}
