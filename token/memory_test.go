package token_test

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/token/storetest"
)

func TestMemoryStoreKeepsTheStoreContract(t *testing.T) {
	clock := testclock.New(time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC))
	storetest.Run(t, func(*testing.T) token.Store { return token.NewMemoryStore() },
		func(d time.Duration) time.Time { clock.Advance(d); return clock.Now() })
}
