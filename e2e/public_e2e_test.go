package e2e

// End-to-end tests of the public port's limits (the public port cannot
// starve the backend): the real binary with QRCODE_ADDR, against
// the fake WeChat and, for the fleet, a real redis-server. Written against
// the contract (QRCODE_LIMIT, QRCODE_CLIENT_LIMIT, ALLOWED_PATHS, the
// statuses and headers), not the code behind it.

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// publicReplica is a sidecar process with its QRCODE_ADDR.
type publicReplica struct {
	*sidecarProcess
	qrcode string
}

func startPublicReplica(t *testing.T, env ...string) publicReplica {
	t.Helper()
	addr := freePort(t)
	return publicReplica{startSidecar(t, slices.Concat(env, []string{"QRCODE_ADDR=" + addr})), addr}
}

// publicAnswer is one answer of a GET /qrcode.
type publicAnswer struct {
	status      int
	retryAfter  string
	cacheStatus string
	contentType string
	body        []byte
	err         error
}

func (a publicAnswer) image() bool {
	return a.err == nil && a.status == http.StatusOK && a.contentType == "image/jpeg" && len(a.body) > 0
}

func (a publicAnswer) String() string {
	if a.err != nil {
		return "error: " + a.err.Error()
	}
	return fmt.Sprintf("HTTP %d %s Retry-After %q Cache-Status %q: %.120s", a.status, a.contentType, a.retryAfter,
		a.cacheStatus, a.body)
}

func getQRCode(c *http.Client, u string) publicAnswer {
	resp, err := c.Get(u)
	if err != nil {
		return publicAnswer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return publicAnswer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"),
		cacheStatus: resp.Header.Get("Cache-Status"), contentType: resp.Header.Get("Content-Type"), body: body, err: err}
}

// The public port flooded by 48 clients asking new codes (the per-client
// limit lifted, so QRCODE_LIMIT alone protects the backend), while the
// backend asks 4 new codes a second through the API port of another
// replica: every backend code is served within 5 s, and the fleet stays
// within getwxacodeunlimit's limit. Before QRCODE_LIMIT, the flood spent
// the whole bucket and the backend got 45011.
func TestPublicFloodCannotStarveTheBackend(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	const rate, burst = 10.0, 10 // 20/s:10; QRCODE_LIMIT by default half: 5/s, burst 5
	env := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"WECHAT_API_URL=" + fake.URL, "REDIS_URL=" + rs.URL, "FLEET_SIZE=2",
		"UPSTREAM_LIMITS=" + fleetCodePath + "=20/s:10", "UPSTREAM_MAX_WAIT=1s", "QRCODE_CLIENT_LIMIT=off"}
	public := startPublicReplica(t, env...)
	backend := startPublicReplica(t, env...)
	rig := &fleetRig{fake: fake, replicas: []*sidecarProcess{public.sidecarProcess, backend.sidecarProcess},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	t.Cleanup(rig.client.CloseIdleConnections)
	rig.warmTokens(t)

	const flooders, floodFor = 48, 6 * time.Second
	before := fake.Calls(fleetCodePath)
	start := time.Now()
	stop := make(chan struct{})
	var flood sync.WaitGroup
	var floodImages, floodRefused, floodOther atomic.Int64
	var floodSample atomic.Value
	for c := range flooders {
		flood.Go(func() {
			for i := 0; i < 2000; i++ { // bounded in count as well as in time
				select {
				case <-stop:
					return
				default:
				}
				a := getQRCode(rig.client, fmt.Sprintf("http://%s/qrcode?scene=flood-%d-%d", public.qrcode, c, i))
				switch {
				case a.image():
					floodImages.Add(1)
				case a.status == http.StatusTooManyRequests && a.retryAfter != "":
					floodRefused.Add(1)
				default:
					floodOther.Add(1)
					floodSample.Store(a.String())
				}
				// A pause, so that 48 clients do not take the machine.
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// The backend: 4 new codes a second while the flood lasts.
	type backendAnswer struct {
		codeAnswer
		took time.Duration
	}
	n := int(floodFor / (250 * time.Millisecond))
	answers := make([]backendAnswer, n)
	var backendWG sync.WaitGroup
	tick := time.NewTicker(250 * time.Millisecond)
	for i := range n {
		<-tick.C
		backendWG.Go(func() {
			t0 := time.Now()
			answers[i] = backendAnswer{rig.ask(backend.sidecarProcess, fmt.Sprintf("backend-%d", i)), time.Since(t0)}
		})
	}
	tick.Stop()
	backendWG.Wait()
	close(stop)
	flood.Wait()
	elapsed := time.Since(start)
	calls := fake.Calls(fleetCodePath) - before

	for i, a := range answers {
		if !a.image() || a.took > 5*time.Second {
			t.Errorf("backend code %d: %s after %v; want an image within 5s", i, a.codeAnswer, a.took.Round(time.Millisecond))
		}
	}
	bound := rate*elapsed.Seconds() + burst + 2
	if float64(calls) > bound {
		t.Errorf("the fleet sent %d upstream calls in %v; its limit allows %.0f·t + %d (+2 at the edges) = %.1f",
			calls, elapsed.Round(time.Millisecond), rate, burst, bound)
	}
	if floodImages.Load() == 0 {
		t.Error("the public port got no image at all: its share should still be spent")
	}
	if floodOther.Load() > 0 {
		t.Errorf("%d flood answers were neither images nor 429 with Retry-After, e.g. %v", floodOther.Load(), floodSample.Load())
	}
	m, _ := scrapeFleetMetrics(t, public.sidecarProcess)
	if v, found := m.sum("wxa_sidecar_qrcode_refusals_total", `reason="public_budget"`); v == 0 {
		t.Errorf("wxa_sidecar_qrcode_refusals_total{reason=\"public_budget\"} = %s on the flooded replica, want the refusals counted",
			sampleString(v, found))
	}
	t.Logf("in %v: %d upstream calls (bound %.1f); flood: %d images, %d refused; backend: %d codes",
		elapsed.Round(time.Millisecond), calls, bound, floodImages.Load(), floodRefused.Load(), n)
}

// One client over QRCODE_CLIENT_LIMIT=6/m:5 gets at most 6 images; the rest
// are 429 with Retry-After; a code it was served before is still served.
// Another client (X-Forwarded-For from a trusted proxy) is unaffected.
func TestPublicClientLimitOverARealProcess(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	p := startPublicReplica(t, "WECHAT_APP_ID="+wechattest.DemoAppID, "WECHAT_APP_SECRET="+wechattest.DemoSecret,
		"WECHAT_API_URL="+fake.URL, "QRCODE_CLIENT_LIMIT=6/m:5", "TRUSTED_PROXIES=127.0.0.1/32")
	c := &http.Client{Timeout: 30 * time.Second}
	images := 0
	for i := range 12 {
		a := getQRCode(c, fmt.Sprintf("http://%s/qrcode?scene=greedy-%d", p.qrcode, i))
		switch {
		case a.image():
			images++
		case a.status == http.StatusTooManyRequests:
			if s, err := strconv.Atoi(a.retryAfter); err != nil || s < 1 || s > 60 {
				t.Errorf("code %d: 429 with Retry-After %q, want 1-60 seconds", i, a.retryAfter)
			}
		default:
			t.Errorf("code %d: %s, want an image or 429", i, a)
		}
	}
	if images > 6 || images == 0 {
		t.Errorf("12 new codes from one client at 6/m:5: %d images, want 1 to 6", images)
	}
	if calls := fake.Calls(fleetCodePath); calls != images {
		t.Errorf("WeChat saw %d calls for %d images", calls, images)
	}
	if a := getQRCode(c, fmt.Sprintf("http://%s/qrcode?scene=greedy-0", p.qrcode)); !a.image() || !strings.Contains(a.cacheStatus, "hit") {
		t.Errorf("a code served before, past the limit: %s, want the cached image", a)
	}
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/qrcode?scene=polite", p.qrcode), nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("another client behind the trusted proxy: %d, want 200", resp.StatusCode)
	}
	m, _ := scrapeFleetMetrics(t, p.sidecarProcess)
	if v, found := m.sum("wxa_sidecar_qrcode_refusals_total", `reason="client_limit"`); v != float64(12-images) {
		t.Errorf("wxa_sidecar_qrcode_refusals_total{reason=\"client_limit\"} = %s, want %d", sampleString(v, found), 12-images)
	}
}

// ALLOWED_PATHS governs every path of the API port, /qrcode included; the
// public port serves GET /qrcode whatever it says.
func TestAllowedPathsRefuseQRCodeOnTheAPIPort(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	p := startPublicReplica(t, "WECHAT_APP_ID="+wechattest.DemoAppID, "WECHAT_APP_SECRET="+wechattest.DemoSecret,
		"WECHAT_API_URL="+fake.URL, "ALLOWED_PATHS=/wxa/generatescheme")
	code, body := get(t, "http://"+p.api+"/qrcode?scene=x")
	if code != http.StatusForbidden || !strings.Contains(string(body), `"errcode":48001`) {
		t.Errorf("GET /qrcode on the API port outside ALLOWED_PATHS: %d %.80q, want 403 with errcode 48001", code, body)
	}
	if calls := fake.Calls(fleetCodePath); calls != 0 {
		t.Errorf("WeChat saw %d calls", calls)
	}
	if a := getQRCode(http.DefaultClient, "http://"+p.qrcode+"/qrcode?scene=x"); !a.image() {
		t.Errorf("GET /qrcode on QRCODE_ADDR: %s, want the image", a)
	}
}
