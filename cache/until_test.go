package cache

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
)

func TestEntryIsGoneAtItsUntil(t *testing.T) {
	c := testclock.New(time.Now())
	m, err := NewMemory(Options{MaxBytes: 64 << 20, TTL: time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	e := NewEntryUntil([]byte(`{"errcode":0,"openlink":"weixin://a"}`), "application/json", "", c.Now().Add(time.Minute))
	if !m.Set(key(1), e) {
		t.Fatal("Set declined an entry valid for a minute")
	}
	if _, ok := m.Get(key(1)); !ok {
		t.Fatal("Get missed an entry before its Until")
	}
	c.Advance(time.Minute)
	if _, ok := m.Get(key(1)); ok {
		t.Error("Get found an entry at its Until")
	}
	if _, ok := m.Peek(key(1)); ok {
		t.Error("Peek found an entry at its Until")
	}
	if s := m.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Errorf("Stats %+v, want 1 hit and the expired look a miss", s)
	}
	// An entry whose Until has passed is never stored.
	if m.Set(key(2), NewEntryUntil([]byte("x"), "", "", c.Now())) {
		t.Error("Set kept an entry already past its Until")
	}
}

func TestEntryWithUntilReplacesAndCodeDoesNot(t *testing.T) {
	c := testclock.New(time.Now())
	m, err := NewMemory(Options{MaxBytes: 64 << 20, TTL: time.Hour, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	old := NewEntryUntil([]byte("old link"), "application/json", "", c.Now().Add(time.Minute))
	fresh := NewEntryUntil([]byte("new link"), "application/json", "", c.Now().Add(time.Hour))
	if !m.Set(key(1), old) || !m.Set(key(1), fresh) {
		t.Fatal("Set declined a link")
	}
	if got, _ := m.Get(key(1)); got == nil || string(got.Body) != "new link" {
		t.Fatalf("after a replacement Get = %v, want the new link", got)
	}
	c.Advance(2 * time.Minute)
	if got, _ := m.Get(key(1)); got == nil || string(got.Body) != "new link" {
		t.Errorf("the new link is gone at the old one's Until: %v", got)
	}
	if s := m.Stats(); s.Entries != 1 {
		t.Errorf("%d entries after a replacement, want 1", s.Entries)
	}
	// A code is the same image for its key forever: the first stays.
	m.Set(key(2), NewEntry([]byte("first"), "image/jpeg", ""))
	m.Set(key(2), NewEntry([]byte("second"), "image/jpeg", ""))
	if got, _ := m.Get(key(2)); got == nil || string(got.Body) != "first" {
		t.Errorf("a code was replaced: %v", got)
	}
}
