package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

func TestClientOfTakesTheRightmostUntrustedForwardedAddress(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	cases := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"an untrusted peer is the client, whatever it forwards", "192.0.2.7:5000", []string{"198.51.100.1"}, "192.0.2.7"},
		{"a trusted peer without X-Forwarded-For", "10.1.2.3:5000", nil, "10.1.2.3"},
		{"a trusted peer names the client", "10.1.2.3:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"what the client wrote to the left is ignored", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"a chain of trusted proxies is walked", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.1, 10.9.9.9, 10.8.8.8"}, "198.51.100.1"},
		{"header lines are one list, in order", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.1", "10.9.9.9"}, "198.51.100.1"},
		{"the last line is the nearest", "10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"only trusted hops: the leftmost", "10.1.2.3:5000", []string{"10.7.7.7, 10.9.9.9"}, "10.7.7.7"},
		{"a hop that is no address: the last trusted hop", "10.1.2.3:5000", []string{"198.51.100.1, unknown, 10.9.9.9"}, "10.9.9.9"},
		{"a hop with a port", "10.1.2.3:5000", []string{"198.51.100.1:4711"}, "198.51.100.1"},
		{"a bracketed IPv6 hop", "10.1.2.3:5000", []string{"[2001:db8::1]"}, "2001:db8::"},
		{"a bracketed IPv6 hop with a port", "10.1.2.3:5000", []string{"[2001:db8::1]:4711"}, "2001:db8::"},
		{"empty elements are skipped", "10.1.2.3:5000", []string{"198.51.100.1, ,"}, "198.51.100.1"},
		{"an IPv4-mapped trusted peer", "[::ffff:10.1.2.3]:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"an IPv4-mapped client is its IPv4 address", "10.1.2.3:5000", []string{"::ffff:198.51.100.1"}, "198.51.100.1"},
		{"a trusted IPv6 peer", "[fd00::5]:5000", []string{"2001:db8:1:2:3:4:5:6"}, "2001:db8:1:2::"},
		{"an untrusted IPv6 peer", "[2001:db8:aa:bb:1::1]:5000", []string{"198.51.100.1"}, "2001:db8:aa:bb::"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := clientOf(c.remote, c.xff, trusted)
			if got.Addr().String() != c.want {
				t.Errorf("clientOf(%q, %q) = %v, want %s", c.remote, c.xff, got, c.want)
			}
		})
	}
	// Without TRUSTED_PROXIES nothing forwarded is believed.
	if got := clientOf("10.1.2.3:5000", []string{"198.51.100.1"}, nil); got.Addr().String() != "10.1.2.3" {
		t.Errorf("without trusted proxies: %v, want the peer 10.1.2.3", got)
	}
}

func TestClientGroupIsTheAddressOrItsSlash64(t *testing.T) {
	group := func(s string) netip.Prefix { return clientGroup(netip.MustParseAddr(s)) }
	if a, b := group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff:ffff:ffff:ffff"); a != b {
		t.Errorf("two addresses of one /64: groups %v and %v, want one", a, b)
	}
	if a, b := group("2001:db8:1:2::1"), group("2001:db8:1:3::1"); a == b {
		t.Errorf("two /64s share group %v", a)
	}
	if a, b := group("192.0.2.1"), group("192.0.2.2"); a == b || a.Bits() != 32 {
		t.Errorf("two IPv4 addresses: groups %v and %v, want one each", a, b)
	}
	if got := clientOf("not an address", nil, nil); got != (netip.Prefix{}) {
		t.Errorf("an unreadable peer: %v, want the zero group", got)
	}
}

// publicHarness is a proxy whose QRCODE_ADDR port has limits of its own.
func publicHarness(t *testing.T, endpoint quota.Limit, po PublicOptions) (*harness, string) {
	t.Helper()
	h := newHarness(t, harnessOptions{cache: true, quota: quota.Options{Default: endpoint},
		proxy: func(o *Options) { o.Public = po }})
	return h, newServer(t, h.proxy.QRCodeHandler())
}

func getFrom(t *testing.T, u string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestPublicClientLimitCountsOnlyNewCodes(t *testing.T) {
	h, public := publicHarness(t, quota.Limit{}, PublicOptions{
		ClientLimit:    quota.Limit{Rate: 1.0 / 60, Burst: 5}, // 6/m:5
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}})
	const client = "198.51.100.7"
	images, refused := 0, 0
	for i := range 9 {
		resp := getFrom(t, fmt.Sprintf("%s/qrcode?scene=c%d", public, i), "X-Forwarded-For", client)
		switch {
		case resp.status == http.StatusOK:
			images++
		case resp.status == http.StatusTooManyRequests && resp.errcode() == int(wechat.MinuteQuota):
			refused++
			if ra, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("429 with Retry-After %q, want whole seconds ≥ 1", resp.header.Get("Retry-After"))
			}
		default:
			t.Errorf("scene c%d: %d %s", i, resp.status, resp.body)
		}
	}
	if images != 5 || refused != 4 {
		t.Errorf("9 new codes from one client at 6/m:5: %d images, %d refused; want 5 and 4", images, refused)
	}
	if got := h.fake.Calls(pathUnlimited); got != 5 {
		t.Errorf("WeChat saw %d calls, want 5", got)
	}
	// A cached code is free, as often as asked.
	for range 3 {
		if resp := getFrom(t, public+"/qrcode?scene=c0", "X-Forwarded-For", client); resp.status != http.StatusOK {
			t.Errorf("a cached code past the limit: %d %s, want 200", resp.status, resp.body)
		}
	}
	// Another client (another /64 behind the same proxy) has its own.
	if resp := getFrom(t, public+"/qrcode?scene=other", "X-Forwarded-For", "2001:db8::1"); resp.status != http.StatusOK {
		t.Errorf("another client: %d %s, want 200", resp.status, resp.body)
	}
	// A forged X-Forwarded-For from an untrusted peer changes nothing: the
	// peer is the client (and a fresh one here).
	if got := testutil.ToFloat64(h.metrics.QRCodeRefusals.WithLabelValues(refusedClientLimit)); got != 4 {
		t.Errorf("qrcode_refusals_total{reason=client_limit} = %v, want 4", got)
	}
	// The API port has no client limit.
	for i := range 3 {
		if resp := h.get(fmt.Sprintf("/qrcode?scene=api%d", i)); resp.status != http.StatusOK {
			t.Errorf("GET /qrcode on the API port: %d %s", resp.status, resp.body)
		}
	}
}

func TestPublicShareLeavesTheAPIPortTheRest(t *testing.T) {
	// The endpoint: burst 10, nothing more within the test. The public
	// port's share: burst 3.
	share := quota.NewLocal(quota.Options{Default: quota.Limit{Rate: 0.001, Burst: 3}})
	t.Cleanup(share.Close)
	h, public := publicHarness(t, quota.Limit{Rate: 0.001, Burst: 10}, PublicOptions{Budget: share})
	images := 0
	for i := range 10 {
		resp := getFrom(t, fmt.Sprintf("%s/qrcode?scene=flood%d", public, i))
		switch {
		case resp.status == http.StatusOK:
			images++
		case resp.status != http.StatusTooManyRequests || resp.header.Get("Retry-After") == "":
			t.Errorf("flood %d: %d %v %s, want 200 or 429 with Retry-After", i, resp.status, resp.header, resp.body)
		}
	}
	if images != 3 {
		t.Errorf("the public port got %d images, want its share's burst, 3", images)
	}
	for i := range 5 {
		if resp := h.postJSON(pathUnlimited, fmt.Sprintf(`{"scene":"backend%d"}`, i)); resp.status != http.StatusOK || resp.errcode() != 0 {
			t.Errorf("backend code %d after the flood: %d %s", i, resp.status, resp.body)
		}
	}
	// GET /qrcode on the API port spends the API side's budget.
	if resp := h.get("/qrcode?scene=backend-get"); resp.status != http.StatusOK {
		t.Errorf("GET /qrcode on the API port after the flood: %d %s", resp.status, resp.body)
	}
	if got := testutil.ToFloat64(h.metrics.QRCodeRefusals.WithLabelValues(refusedPublicBudget)); got != 7 {
		t.Errorf("qrcode_refusals_total{reason=public_budget} = %v, want 7", got)
	}
	if got := h.fake.Calls(pathUnlimited); got != 9 {
		t.Errorf("WeChat saw %d calls, want 3 + 5 + 1", got)
	}
}

// heldGate refuses every call, each only once the test lets it.
type heldGate struct {
	entered chan struct{}
	release chan struct{}
	admits  atomic.Int32
}

func (g *heldGate) Admit(ctx context.Context, _ quota.Key) error {
	g.admits.Add(1)
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return quota.RateRefusal(time.Second)
}

func (*heldGate) Observe(context.Context, quota.Key, wechat.Errcode) {}

// A backend call that joined a public flight refused for the public port's
// budget asks again in its own name: the public flood cannot refuse it.
func TestAPICallerJoiningARefusedPublicFlightIsServed(t *testing.T) {
	g := &heldGate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h, public := publicHarness(t, quota.Limit{}, PublicOptions{Budget: g})
	var wg sync.WaitGroup
	var pub response
	wg.Go(func() { pub = getFrom(t, public+"/qrcode?scene=contested") })
	<-g.entered
	var api response
	wg.Go(func() { api = h.get("/qrcode?scene=contested") })
	// Time for the API caller to join the held flight; should it not have,
	// it leads its own and the test proves less, never fails wrongly.
	time.Sleep(200 * time.Millisecond)
	close(g.release)
	wg.Wait()
	if pub.status != http.StatusTooManyRequests {
		t.Errorf("the public caller: %d %s, want 429", pub.status, pub.body)
	}
	if api.status != http.StatusOK {
		t.Errorf("the API caller that joined the refused public flight: %d %s, want the image", api.status, api.body)
	}
}

// A public flight of a code an API caller waits for is the API side's: no
// public budget is asked.
func TestPublicFlightOfAWantedCodeSpendsTheAPISide(t *testing.T) {
	g := &heldGate{entered: make(chan struct{}, 1), release: make(chan struct{})}
	close(g.release)
	h, public := publicHarness(t, quota.Limit{}, PublicOptions{Budget: g, ClientLimit: quota.Limit{Rate: 0.001, Burst: 1}})
	_, canonical, err := wxacode.FromQuery(url.Values{"scene": {"wanted"}})
	if err != nil {
		t.Fatal(err)
	}
	key := cache.Key(wxacode.KeyOf(demoApp, wechat.PathUnlimited, canonical))
	h.proxy.public.wanted.add(key)
	if resp := getFrom(t, public+"/qrcode?scene=wanted"); resp.status != http.StatusOK {
		t.Errorf("a public request for a code an API caller wants: %d %s, want the image", resp.status, resp.body)
	}
	if n := g.admits.Load(); n != 0 {
		t.Errorf("the public budget was asked %d times, want 0", n)
	}
	h.proxy.public.wanted.done(key)
	if resp := getFrom(t, public+"/qrcode?scene=unwanted"); resp.status != http.StatusTooManyRequests {
		t.Errorf("a public request for another code: %d %s, want 429 (the budget refuses)", resp.status, resp.body)
	}
	// Refused by the budget, the client spent nothing: with a burst of 1,
	// a second new code is refused by the budget again, not the client
	// limit.
	if resp := getFrom(t, public+"/qrcode?scene=unwanted2"); resp.status != http.StatusTooManyRequests ||
		testutil.ToFloat64(h.metrics.QRCodeRefusals.WithLabelValues(refusedClientLimit)) != 0 {
		t.Errorf("after a budget refusal: %d %s, client_limit refusals %v; want the budget's 429 and none",
			resp.status, resp.body, testutil.ToFloat64(h.metrics.QRCodeRefusals.WithLabelValues(refusedClientLimit)))
	}
	if len(h.proxy.public.wanted.m) != 0 {
		t.Errorf("wanted keys left behind: %d", len(h.proxy.public.wanted.m))
	}
}

func TestAllowedPathsGovernQRCodeOnTheAPIPort(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true, proxy: func(o *Options) { o.AllowedPaths = []string{"/wxa/generatescheme"} }})
	resp := h.get("/qrcode?scene=x")
	if resp.status != http.StatusForbidden || resp.errcode() != int(wechat.Unauthorized) {
		t.Errorf("GET /qrcode outside ALLOWED_PATHS: %d %s, want 403 and 48001", resp.status, resp.body)
	}
	if got := h.fake.Calls(pathUnlimited); got != 0 {
		t.Errorf("WeChat saw %d calls", got)
	}
	// The public port serves /qrcode whatever ALLOWED_PATHS says.
	if resp := getFrom(t, newServer(t, h.proxy.QRCodeHandler())+"/qrcode?scene=x"); resp.status != http.StatusOK {
		t.Errorf("GET /qrcode on QRCODE_ADDR: %d %s, want 200", resp.status, resp.body)
	}
}

// A client past its limit is answered from the cache alone: a code the
// fleet holds in Redis is still served, a new one refused, and neither
// takes a lease (a flood past its limit costs one cache lookup each).
func TestAClientPastItsLimitIsAnsweredFromTheCacheAlone(t *testing.T) {
	rs := redistest.Start(t, redistest.Options{})
	other, replica := &fleetReplica{}, &fleetReplica{}
	a := newHarness(t, harnessOptions{cache: true, proxy: other.wire(t, rs.URL)})
	b := newHarness(t, harnessOptions{cache: true, proxy: func(o *Options) {
		replica.wire(t, rs.URL)(o)
		o.Public = PublicOptions{ClientLimit: quota.Limit{Rate: 0.001, Burst: 1}}
	}})
	public := newServer(t, b.proxy.QRCodeHandler())
	if resp := getFrom(t, public+"/qrcode?scene=mine"); resp.status != http.StatusOK {
		t.Fatalf("the client's one new code: %d %s", resp.status, resp.body)
	}
	if resp := a.get("/qrcode?scene=fleet"); resp.status != http.StatusOK {
		t.Fatalf("another replica's code: %d %s", resp.status, resp.body)
	}
	replica.mu.Lock()
	replica.ops = nil
	replica.mu.Unlock()
	resp := getFrom(t, public+"/qrcode?scene=fleet")
	if resp.status != http.StatusOK || resp.header.Get("Cache-Status") != cacheStatusSharedHit {
		t.Errorf("a code in the fleet's cache, past the limit: %d Cache-Status %q, want 200 from the shared tier",
			resp.status, resp.header.Get("Cache-Status"))
	}
	if resp := getFrom(t, public+"/qrcode?scene=new"); resp.status != http.StatusTooManyRequests {
		t.Errorf("a new code past the limit: %d %s, want 429", resp.status, resp.body)
	}
	if replica.reported("lease ok") {
		t.Errorf("a client past its limit took a lease: Redis ops %v", replica.ops)
	}
	if got := a.fake.Calls(pathUnlimited) + b.fake.Calls(pathUnlimited); got != 2 {
		t.Errorf("WeChat saw %d calls, want 2", got)
	}
}
