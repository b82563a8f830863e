package cache

import (
	"context"
	"errors"
	"testing"
)

// NoShared is a tier that is always empty: every Get a miss (never a
// fault), every Set accepted and forgotten.
func TestNoSharedMissesAndForgets(t *testing.T) {
	ctx := context.Background()
	k := Key{1}
	if err := NoShared.Set(ctx, "wxapp", k, NewEntry([]byte("img"), "image/jpeg", "")); err != nil {
		t.Fatalf("Set: %v, want nil", err)
	}
	e, err := NoShared.Get(ctx, "wxapp", k)
	if !errors.Is(err, ErrNotFound) || e != nil {
		t.Errorf("Get after Set = %v, %v; want nil, ErrNotFound", e, err)
	}
}
