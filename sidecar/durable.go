package sidecar

import (
	"context"

	"github.com/wxa-sidecar/wxa-sidecar/config"
	"sync/atomic"

	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/store"
)

// openStore opens the durable store STORE_URL names and puts it behind the
// caches of co. A store that refuses or does not answer is no reason not
// to start: it logs so, reports store_up 0, and is used once it answers.
func (s *Sidecar) openStore(co *codes.Options) error {
	cfg := s.cfg
	var opened atomic.Pointer[store.Store]
	sm := s.metrics.ObserveStore(func() float64 {
		if st := opened.Load(); st != nil {
			return float64(st.QueueDepth())
		}
		return 0
	})
	o := storeOptions(cfg)
	o.Logger, o.Hooks = s.log, sm.Hooks()
	st, err := store.Open(o)
	if err != nil {
		return err
	}
	opened.Store(st)
	s.store = st
	co.Store = st
	return nil
}

// closeStore writes what the store's queue holds within ctx (the exit
// bound), then stops it.
func (s *Sidecar) closeStore(ctx context.Context) {
	if s.store != nil {
		s.store.Close(ctx)
	}
}

// storeStatus is the store for /status, nil without one.
func (s *Sidecar) storeStatus() *store.Status {
	if s.store == nil {
		return nil
	}
	st := s.store.Status()
	return &st
}

// storeOptions are the durable store's options from cfg.
func storeOptions(cfg config.Config) store.Options {
	secrets := make(map[string]string, len(cfg.Apps))
	for _, a := range cfg.Apps {
		secrets[a.ID] = a.Secret
	}
	return store.Options{URL: cfg.StoreURL, Endpoint: cfg.StoreEndpoint, Region: cfg.StoreRegion,
		AccessKey: cfg.StoreAccessKey, SecretKey: cfg.StoreSecretKey, Timeout: cfg.StoreTimeout, TTL: cfg.StoreTTL,
		MaxBytes: cfg.StoreMaxBytes, Secrets: secrets, Key: cfg.StoreKey}
}
