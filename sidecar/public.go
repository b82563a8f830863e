package sidecar

import (
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/proxy"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// publicOptions is what GET /qrcode on QRCODE_ADDR may spend (docs/codes-and-links.md,
// "Exposing GET /qrcode"), given the endpoints' limits: its share of
// getwxacodeunlimit's limit (QRCODE_LIMIT, by default half of it) in a
// gate of its own, on Redis with a fleet, and each client's limit. The
// share's gate, if any, is kept in s.publicGate, for Close and /status.
func (s *Sidecar) publicOptions(limits quota.Options) proxy.PublicOptions {
	cfg := s.cfg
	if cfg.QRCodeAddr == "" {
		return proxy.PublicOptions{}
	}
	o := proxy.PublicOptions{ClientLimit: quota.Limit{Rate: cfg.ClientLimit.Rate, Burst: cfg.ClientLimit.Burst},
		TrustedProxies: cfg.TrustedProxies}
	endpoint := limits.Limit(wechat.PathUnlimited)
	share := quota.Limit{Rate: endpoint.Rate / 2, Burst: max(endpoint.Burst/2, 1)}
	if cfg.QRCodeShare != nil {
		share = quota.Limit{Rate: cfg.QRCodeShare.Rate, Burst: cfg.QRCodeShare.Burst}
	}
	if share.Rate <= 0 {
		// QRCODE_LIMIT=off: the port spends from the endpoint's limit alone.
		return o
	}
	// Refused at once, never queued: a flood waiting for slots would hold
	// a connection and a goroutine each. Its refusals are counted in
	// qrcode_refusals_total, not in the endpoint's metrics.
	shareOpts := quota.Options{Default: share, Logger: s.log}
	if s.redis != nil {
		s.publicGate = fleet.NewGate(s.redis, shareOpts, cfg.FleetSize)
	} else {
		s.publicGate = quota.NewLocal(shareOpts)
	}
	o.Budget = s.publicGate
	return o
}
