package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// What GET /qrcode on QRCODE_ADDR may spend. That port faces the world: a
// flood there must not spend the quota the backend's calls on the API port
// need, nor one client all of the port's.

// PublicOptions configures what GET /qrcode on QRCODE_ADDR (QRCodeHandler)
// may spend of WeChat's quota. Only requests that start an upstream call
// spend: a cached code, or one joined to a flight already under way, is
// free. The zero value spends as the API port does.
type PublicOptions struct {
	// Budget, when set, is the port's share of each endpoint's limit
	// (QRCODE_LIMIT): every upstream request such a GET starts must pass
	// it, with the key {app, PublicEndpoint(endpoint)}, and then the
	// endpoint's own gate, so the API port keeps the rest. It should
	// refuse at once rather than queue (MaxWait 0): a flood waiting for
	// slots would hold a connection and a goroutine each.
	Budget quota.Gate
	// ClientLimit is what one client (an IPv4 address, an IPv6 /64) may
	// start in this process (QRCODE_CLIENT_LIMIT); a zero Rate: no limit.
	ClientLimit quota.Limit
	// MaxClients bounds the clients ClientLimit remembers; default
	// quota.DefaultMaxClients.
	MaxClients int
	// TrustedProxies are the peers whose X-Forwarded-For is believed
	// (TRUSTED_PROXIES): the client is the rightmost address there that
	// is not one of them. Empty: the client is the peer.
	TrustedProxies []netip.Prefix
}

// PublicEndpoint is the key under which a Budget keeps the public port's
// share of endpoint: a key of its own, so that in a fleet's Redis the
// share is a bucket of its own beside the endpoint's.
func PublicEndpoint(endpoint string) string { return endpoint + "#public" }

// Reasons of qrcode_refusals_total (metrics.QRCodeRefusalReasons).
const (
	refusedPublicBudget = "public_budget"
	refusedClientLimit  = "client_limit"
)

// publicPort is what PublicOptions became: nil in a Proxy without any
// limit of the public port's own.
type publicPort struct {
	budget  quota.Gate                   // nil: none
	clients *quota.Clients[netip.Prefix] // nil: no per-client limit
	trusted []netip.Prefix
	wanted  wantedKeys

	refusedBudget, refusedClient prometheus.Counter
}

func newPublicPort(o PublicOptions, refusals *prometheus.CounterVec, now func() time.Time) *publicPort {
	if o.Budget == nil && o.ClientLimit.Rate <= 0 {
		return nil
	}
	pp := &publicPort{budget: o.Budget, trusted: o.TrustedProxies, wanted: wantedKeys{m: map[cache.Key]int{}},
		refusedBudget: refusals.WithLabelValues(refusedPublicBudget),
		refusedClient: refusals.WithLabelValues(refusedClientLimit)}
	if o.ClientLimit.Rate > 0 {
		pp.clients = quota.NewClients[netip.Prefix](o.ClientLimit, o.MaxClients, now)
	}
	return pp
}

// callerRefusal is a call refused for the budget of the caller whose
// flight it was (QRCODE_CLIENT_LIMIT, QRCODE_LIMIT), not for the
// endpoint's: a caller who only joined that flight has spent nothing, and
// asks again in its own name.
type callerRefusal struct{ *quota.Refusal }

func (e callerRefusal) Unwrap() error { return e.Refusal }

// publicShare is the Budget of a public call: PublicOptions.Budget under
// the public key, its refusals in the port's words.
type publicShare publicPort

func (s *publicShare) Admit(ctx context.Context, k quota.Key) error {
	err := s.budget.Admit(ctx, quota.Key{App: k.App, Endpoint: PublicEndpoint(k.Endpoint)})
	var r *quota.Refusal
	if !errors.As(err, &r) {
		return err
	}
	s.refusedBudget.Inc()
	return callerRefusal{&quota.Refusal{Code: wechat.MinuteQuota, RetryAfter: max(r.RetryAfter, time.Second),
		Msg: "api minute-quota reach limit (wxa-sidecar QRCODE_LIMIT: the public port's share is spent)"}}
}

func (*publicShare) Observe(context.Context, quota.Key, wechat.Errcode) {}

// publicCall is a GET /qrcode on QRCODE_ADDR: its call, and the fetch that
// charges the caller's own limits first.
type publicCall struct {
	call
	port *publicPort
	key  cache.Key
	// Where the request came from; read only if it is fetched.
	remote string
	xff    []string
	// client is who asks, set by clientKey; the rest is written by the
	// flight's load alone, which calls Fetch once and once more for its
	// retry, in turn.
	client      netip.Prefix
	clientKnown bool
	charged     bool // a slot of the client's is spent on this request
	tries       int
}

func (c *publicCall) clientKey() netip.Prefix {
	if !c.clientKnown {
		c.client, c.clientKnown = clientOf(c.remote, c.xff, c.port.trusted), true
	}
	return c.client
}

func (c *publicCall) clientRefusal(wait time.Duration) error {
	c.port.refusedClient.Inc()
	return callerRefusal{&quota.Refusal{Code: wechat.MinuteQuota, RetryAfter: max(wait, time.Second),
		Msg: "api minute-quota reach limit (wxa-sidecar QRCODE_CLIENT_LIMIT: too many new codes from this address)"}}
}

// fromCacheOnly answers a client already past its limit from the cache
// alone (codes.Lookup: L1, then L2; no lease, no flight, no fetch), or
// with the client limit's refusal, and reports whether it answered: a
// flood past its limit costs one cache lookup a request, not the
// fleet's flight machinery.
func (c *publicCall) fromCacheOnly(ctx context.Context, cs *codes.Codes, r codes.Request) (res codes.Result, answered bool, err error) {
	if c.port.clients == nil {
		return codes.Result{}, false, nil
	}
	wait := c.port.clients.Wait(c.clientKey())
	if wait == 0 {
		return codes.Result{}, false, nil
	}
	if res, found := cs.Lookup(ctx, c.key, r); found {
		return res, true, nil
	}
	return codes.Result{Status: codes.Miss}, true, c.clientRefusal(wait)
}

// Fetch charges the client's limit once for the request (its retry is
// the same request), then fetches with the public share as the budget.
// A flight an API caller waits on is the API side's: it is fetched
// without either.
func (c *publicCall) Fetch(ctx context.Context) (*codes.Image, error) {
	if c.port.wanted.has(c.key) {
		return c.call.Fetch(ctx)
	}
	c.tries++
	if c.port.clients != nil && !c.charged {
		wait, ok := c.port.clients.Take(c.clientKey())
		if !ok {
			return nil, c.clientRefusal(wait)
		}
		c.charged = true
	}
	var budget quota.Gate
	if c.port.budget != nil {
		budget = (*publicShare)(c.port)
	}
	img, err := c.call.fetchImage(ctx, budget)
	var r *quota.Refusal
	if c.charged && c.tries == 1 && errors.As(err, &r) {
		// Refused before anything went upstream: the client spent
		// nothing.
		c.port.clients.GiveBack(c.client)
		c.charged = false
	}
	return img, err
}

// maxRejoins bounds how often a caller asks again after joining flights
// refused for their leaders' budgets. Three suffice for an API caller
// (see getCode); a public caller leads its own flight by then, or gives
// up with the refusal.
const maxRejoins = 3

// getCode is codes.Get for a code request, f its fetch (a *publicCall on
// QRCODE_ADDR). A caller that joined a flight refused for its leader's
// budget asks again, as its own flight if need be. An API caller (api)
// also marks the key wanted first: a public flight that starts from then
// on is fetched on the API side's budget rather than refused, so a flood
// of the public port on the very code the backend asks cannot refuse the
// backend. A flight it joins on its second try may have started before
// the mark; the one after that cannot have.
//
// A client of QRCODE_ADDR already past its QRCODE_CLIENT_LIMIT is answered
// from the cache alone (see fromCacheOnly).
func (p *Proxy) getCode(ctx context.Context, key cache.Key, r codes.Request, f codes.Fetcher, api bool) (codes.Result, error) {
	if pc, ok := f.(*publicCall); ok {
		if res, answered, err := pc.fromCacheOnly(ctx, p.codes, r); answered {
			return res, err
		}
	}
	res, err := p.codes.Get(ctx, key, r, f)
	for try := 0; try < maxRejoins && err != nil && res.Status == codes.Collapsed && errors.As(err, new(callerRefusal)); try++ {
		if api && try == 0 && p.public != nil {
			p.public.wanted.add(key)
			defer p.public.wanted.done(key)
		}
		res, err = p.codes.Get(ctx, key, r, f)
	}
	return res, err
}

// qrcodeCall is the call of a GET /qrcode of r for app a and, on
// QRCODE_ADDR (public) when the port has limits of its own, the
// publicCall that fetches it (nil otherwise: the call fetches itself).
func (p *Proxy) qrcodeCall(a *app, r *http.Request, public bool) (*call, *publicCall) {
	c := call{app: a, path: wechat.PathUnlimited, endpoint: wechat.PathUnlimited}
	if !public || p.public == nil {
		return &c, nil
	}
	pc := &publicCall{call: c, port: p.public, remote: r.RemoteAddr, xff: r.Header.Values("X-Forwarded-For")}
	return &pc.call, pc
}

// wantedKeys are the codes API callers wait for, after a public flight
// refused them once: rarely more than a handful.
type wantedKeys struct {
	mu sync.Mutex
	m  map[cache.Key]int
}

func (w *wantedKeys) add(k cache.Key) {
	w.mu.Lock()
	w.m[k]++
	w.mu.Unlock()
}

func (w *wantedKeys) done(k cache.Key) {
	w.mu.Lock()
	if w.m[k]--; w.m[k] <= 0 {
		delete(w.m, k)
	}
	w.mu.Unlock()
}

func (w *wantedKeys) has(k cache.Key) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[k] > 0
}
