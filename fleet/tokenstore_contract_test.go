package fleet

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/token/storetest"
)

// The Redis store keeps the contract token.MemoryStore keeps: the same
// suite, on a real redis-server.
func TestTokenStoreKeepsTheStoreContract(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	clock := newClock()
	storetest.Run(t, func(t *testing.T) token.Store {
		srv.Command(t, "FLUSHALL")
		c, err := New(Options{URL: srv.URL, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return NewTokenStore(c)
	}, func(d time.Duration) time.Time { clock.Advance(d); return clock.Now() })
}
