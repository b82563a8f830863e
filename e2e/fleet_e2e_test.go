package e2e

// End-to-end tests of the shared tier: several processes of the
// real binary against one fake WeChat (in this process) and one real
// redis-server (redistest), with REDIS_URL set. They are written against
// the contract (variables, Cache-Status values, metric names), not
// against the code behind it.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// fleetCodePath is the code endpoint every test asks: the one a fleet
// spends WeChat's per-minute quota on.
const fleetCodePath = "/wxa/getwxacodeunlimit"

// Cache-Status values of the contract (docs/codes-and-links.md's table).
const (
	csHit             = "wxa-sidecar; hit"
	csSharedHit       = "wxa-sidecar; hit; detail=shared"
	csStored          = "wxa-sidecar; fwd=uri-miss; stored"
	csCollapsed       = "wxa-sidecar; fwd=uri-miss; collapsed"
	csCollapsedShared = "wxa-sidecar; fwd=uri-miss; collapsed; detail=shared"
)

// The bounded label values of wxa_sidecar_redis_requests_total.
var (
	redisOps     = []string{"l2_get", "l2_set", "lease", "ratelimit", "cooldown", "token"}
	redisResults = []string{"ok", "miss", "error", "timeout", "breaker_open"}
)

// fleetRig is a fleet: replicas of the binary sharing one fake WeChat and
// one Redis.
type fleetRig struct {
	fake     *wechattest.Server
	env      []string // what every replica is started with
	replicas []*sidecarProcess
	client   *http.Client
}

func newFleetFake(t *testing.T, opts wechattest.Options) *wechattest.Server {
	t.Helper()
	fake := wechattest.NewServer(opts)
	t.Cleanup(fake.Close)
	return fake
}

// startFleet starts n replicas against fake with the demo app,
// REDIS_URL=redisURL and FLEET_SIZE=n; env comes last, so it may override
// any of them.
func startFleet(t *testing.T, fake *wechattest.Server, n int, redisURL string, env ...string) *fleetRig {
	t.Helper()
	rig := &fleetRig{
		fake: fake,
		env: append([]string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
			"WECHAT_API_URL=" + fake.URL, "REDIS_URL=" + redisURL, "FLEET_SIZE=" + strconv.Itoa(n)}, env...),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}},
	}
	t.Cleanup(rig.client.CloseIdleConnections)
	for range n {
		rig.add(t)
	}
	return rig
}

// add starts one more replica, with the same environment.
func (rig *fleetRig) add(t *testing.T) *sidecarProcess {
	t.Helper()
	p := startSidecar(t, rig.env)
	rig.replicas = append(rig.replicas, p)
	return p
}

// codeAnswer is what a replica answered to one code request.
type codeAnswer struct {
	status      int
	cacheStatus string
	contentType string
	body        []byte
	errcode     int   // WeChat's errcode of a JSON answer, 0 with an image
	err         error // no answer, or an answer that is neither image nor errcode
}

// image reports whether the answer is an image.
func (a codeAnswer) image() bool {
	return a.err == nil && a.status == http.StatusOK && a.contentType == "image/jpeg" && len(a.body) > 0
}

func (a codeAnswer) String() string {
	switch {
	case a.err != nil:
		return "error: " + a.err.Error()
	case a.image():
		return fmt.Sprintf("image of %d bytes, Cache-Status %q", len(a.body), a.cacheStatus)
	}
	return fmt.Sprintf("HTTP %d %s: %.200s", a.status, a.contentType, a.body)
}

// ask posts {"scene":scene} to p's code endpoint; safe from any goroutine.
func (rig *fleetRig) ask(p *sidecarProcess, scene string) codeAnswer {
	resp, err := rig.client.Post("http://"+p.api+fleetCodePath, "application/json",
		strings.NewReader(`{"scene":"`+scene+`"}`))
	if err != nil {
		return codeAnswer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	a := codeAnswer{status: resp.StatusCode, cacheStatus: resp.Header.Get("Cache-Status"),
		contentType: resp.Header.Get("Content-Type"), body: body, err: err}
	if a.err == nil && strings.HasPrefix(a.contentType, "application/json") {
		var e struct {
			Errcode int `json:"errcode"`
		}
		if json.Unmarshal(body, &e) != nil || e.Errcode == 0 {
			a.err = fmt.Errorf("HTTP %d, JSON without an errcode: %.200s", a.status, body)
		} else {
			a.errcode = e.Errcode
		}
	}
	if a.err == nil && a.status >= 500 {
		a.err = fmt.Errorf("HTTP %d: %.200s", a.status, body)
	}
	return a
}

// warmTokens waits until every replica holds a token (the sidecar answers
// /cgi-bin/token itself), so a test's timing starts with the tokens there.
func (rig *fleetRig) warmTokens(t *testing.T) {
	t.Helper()
	for _, p := range rig.replicas {
		code, body := get(t, "http://"+p.api+"/cgi-bin/token?grant_type=client_credential&appid="+
			wechattest.DemoAppID+"&secret="+wechattest.DemoSecret)
		if code != http.StatusOK || !bytes.Contains(body, []byte(`"access_token"`)) {
			t.Fatalf("token through %s: %d %.200s", p.api, code, body)
		}
	}
}

// fleetMetrics is one scrape of /metrics: each sample by its series as
// printed, name{labels}.
type fleetMetrics map[string]float64

func scrapeFleetMetrics(t *testing.T, p *sidecarProcess) (fleetMetrics, string) {
	t.Helper()
	code, body := get(t, "http://"+p.admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	m := fleetMetrics{}
	for line := range strings.SplitSeq(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m, string(body)
}

// sum adds the samples of the metric name that carry every label given
// (as `op="l2_get"`); found is false when no sample matched.
func (m fleetMetrics) sum(name string, labels ...string) (total float64, found bool) {
	for series, v := range m {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(series, l)
		}
		if matches {
			total, found = total+v, true
		}
	}
	return total, found
}

func sampleString(v float64, found bool) string {
	if !found {
		return "missing"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// redisStatus is the shared tier as /status shows it.
type redisStatus struct {
	Addr    string
	Up      bool
	Breaker string
}

// fleetStatus reads /status and finds the shared tier in it: the object
// with addr, up and breaker, wherever main puts it.
func fleetStatus(t *testing.T, p *sidecarProcess) (redisStatus, string) {
	t.Helper()
	code, body := get(t, "http://"+p.admin+"/status")
	if code != http.StatusOK {
		t.Fatalf("/status: %d", code)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("/status: %v", err)
	}
	s, ok := findRedisStatus(v)
	if !ok {
		t.Errorf("/status shows no Redis (an object with addr, up and breaker):\n%s", body)
	}
	return s, string(body)
}

func findRedisStatus(v any) (redisStatus, bool) {
	switch x := v.(type) {
	case map[string]any:
		addr, okAddr := x["addr"].(string)
		up, okUp := x["up"].(bool)
		breaker, okBreaker := x["breaker"].(string)
		if okAddr && okUp && okBreaker {
			return redisStatus{addr, up, breaker}, true
		}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			if s, ok := findRedisStatus(x[k]); ok {
				return s, true
			}
		}
	case []any:
		for _, e := range x {
			if s, ok := findRedisStatus(e); ok {
				return s, true
			}
		}
	}
	return redisStatus{}, false
}

// sharingTally is what one replica answered in assertFleetSharesImages.
type sharingTally struct {
	asked, shared int
}

// assertFleetSharesImages asks n distinct codes of every replica, one
// after another (the first replica asked turns with the code, so each
// replica both fetches and reads others' images), and expects n upstream
// calls: the first asked fetches and stores, every other finds the image
// in Redis. A second round finds every image on every replica.
func assertFleetSharesImages(t *testing.T, rig *fleetRig, n int, prefix string) []sharingTally {
	t.Helper()
	tally := make([]sharingTally, len(rig.replicas))
	before := rig.fake.Calls(fleetCodePath)
	images := make([][]byte, n)
	for round := range 2 {
		for i := range n {
			scene := fmt.Sprintf("%s-%d", prefix, i)
			for k := range rig.replicas {
				r := (i + k) % len(rig.replicas)
				a := rig.ask(rig.replicas[r], scene)
				tally[r].asked++
				if !a.image() {
					t.Fatalf("round %d, code %s from replica %d: %s", round, scene, r, a)
				}
				if a.cacheStatus == csSharedHit {
					tally[r].shared++
				}
				if images[i] == nil {
					images[i] = a.body
				} else if !bytes.Equal(a.body, images[i]) {
					t.Errorf("code %s: replica %d answered other bytes than the first", scene, r)
				}
				var want []string
				switch {
				case round == 0 && k == 0:
					want = []string{csStored}
				case round == 0:
					// This replica never saw the code: it can only be in Redis.
					want = []string{csSharedHit}
				default:
					// In L1 now, or (if L1 declined it) in Redis still.
					want = []string{csHit, csSharedHit}
				}
				if !slices.Contains(want, a.cacheStatus) {
					t.Errorf("round %d, code %s from replica %d (asked %d of %d): Cache-Status %q, want one of %q",
						round, scene, r, k+1, len(rig.replicas), a.cacheStatus, want)
				}
			}
		}
	}
	if got := rig.fake.Calls(fleetCodePath) - before; got != n {
		t.Errorf("%d distinct codes asked of %d replicas cost %d upstream calls, want %d (one per code for the fleet)",
			n, len(rig.replicas), got, n)
	}
	return tally
}

// awaitSharing polls for up to 15 s until a code fetched by from is a
// shared hit at to (each try a new code): Redis is in use by both again.
func (rig *fleetRig) awaitSharing(t *testing.T, from, to *sidecarProcess, prefix string) {
	t.Helper()
	start := time.Now()
	for i := 0; ; i++ {
		scene := fmt.Sprintf("%s-%d", prefix, i)
		a, b := rig.ask(from, scene), rig.ask(to, scene)
		if !a.image() || !b.image() {
			t.Fatalf("code %s: %s, then %s", scene, a, b)
		}
		if b.cacheStatus == csSharedHit {
			t.Logf("%s: a shared hit %v after Redis came back (try %d)", prefix, time.Since(start).Round(10*time.Millisecond), i+1)
			return
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("%s: no shared hit within 15 s of Redis coming back (last Cache-Status %q)", prefix, b.cacheStatus)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// askAllAtOnce sends scenes[i] to replica i mod len, all released at once,
// and returns the answers in order and how long the last took to come.
func (rig *fleetRig) askAllAtOnce(scenes []string) ([]codeAnswer, time.Duration) {
	answers := make([]codeAnswer, len(scenes))
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i, scene := range scenes {
		wg.Go(func() {
			<-release
			answers[i] = rig.ask(rig.replicas[i%len(rig.replicas)], scene)
		})
	}
	start := time.Now()
	close(release)
	wg.Wait()
	return answers, time.Since(start)
}

// N distinct codes, each asked of 3 replicas in turn: N upstream calls, and
// every later answer a shared hit; the metrics and /status of the contract.
func TestFleetFetchesEachCodeOnce(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 3, rs.URL)
	const n = 10
	tally := assertFleetSharesImages(t, rig, n, "once")

	var acquired, l2Sets float64
	for r, p := range rig.replicas {
		m, _ := scrapeFleetMetrics(t, p)
		if up, ok := m.sum("wxa_sidecar_redis_up"); !ok || up != 1 {
			t.Errorf("replica %d: wxa_sidecar_redis_up %s, want 1", r, sampleString(up, ok))
		}
		// Each image request counts exactly one result, and shared_hit
		// exactly when Cache-Status said detail=shared.
		var counted float64
		for _, result := range []string{"hit", "shared_hit", "miss", "collapsed"} {
			v, ok := m.sum("wxa_sidecar_cache_requests_total", `result="`+result+`"`)
			if !ok {
				t.Errorf("replica %d: no wxa_sidecar_cache_requests_total{result=%q}", r, result)
			}
			counted += v
		}
		if int(counted) != tally[r].asked {
			t.Errorf("replica %d: wxa_sidecar_cache_requests_total adds up to %v for %d image requests", r, counted, tally[r].asked)
		}
		if v, _ := m.sum("wxa_sidecar_cache_requests_total", `result="shared_hit"`); int(v) != tally[r].shared {
			t.Errorf("replica %d: shared_hit %v, but %d answers said detail=shared", r, v, tally[r].shared)
		}
		for series := range m {
			if !strings.HasPrefix(series, "wxa_sidecar_redis_requests_total{") {
				continue
			}
			if !slices.ContainsFunc(redisOps, func(op string) bool { return strings.Contains(series, `op="`+op+`"`) }) ||
				!slices.ContainsFunc(redisResults, func(res string) bool { return strings.Contains(series, `result="`+res+`"`) }) {
				t.Errorf("replica %d: %s has a label value outside the contract", r, series)
			}
		}
		if v, _ := m.sum("wxa_sidecar_redis_requests_total", `op="l2_get"`, `result="ok"`); v < float64(tally[r].shared) {
			t.Errorf(`replica %d: wxa_sidecar_redis_requests_total{op="l2_get",result="ok"} %v, below its %d shared hits`, r, v, tally[r].shared)
		}
		if _, ok := m.sum("wxa_sidecar_redis_request_duration_seconds_count", `op="l2_get"`); !ok {
			t.Errorf(`replica %d: no wxa_sidecar_redis_request_duration_seconds{op="l2_get"} histogram`, r)
		}
		v, ok := m.sum("wxa_sidecar_fleet_leases_total", `result="acquired"`)
		if !ok {
			t.Errorf(`replica %d: no wxa_sidecar_fleet_leases_total{result="acquired"}`, r)
		}
		acquired += v
		v, _ = m.sum("wxa_sidecar_redis_requests_total", `op="l2_set"`, `result="ok"`)
		l2Sets += v
		s, _ := fleetStatus(t, p)
		if s.Addr != rs.Addr || !s.Up || s.Breaker != "closed" {
			t.Errorf("replica %d: /status shows Redis %+v, want addr %s, up, breaker closed", r, s, rs.Addr)
		}
	}
	if acquired < n || l2Sets < n {
		t.Errorf("the fleet acquired %v leases and stored %v images in Redis for %d fetched codes; want at least %d of each", acquired, l2Sets, n, n)
	}
}

// 150 identical misses at once over 3 replicas, WeChat slow: one upstream
// call, one image for all.
func TestFleetCollapsesConcurrentMisses(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 3, rs.URL)
	rig.warmTokens(t)
	fake.SetLatency(500 * time.Millisecond)
	before := fake.Calls(fleetCodePath)
	scenes := make([]string, 150)
	for i := range scenes {
		scenes[i] = "same-code"
	}
	answers, _ := rig.askAllAtOnce(scenes)
	if got := fake.Calls(fleetCodePath) - before; got != 1 {
		t.Errorf("150 identical misses over 3 replicas cost %d upstream calls, want 1", got)
	}
	stored := 0
	for i, a := range answers {
		if !a.image() {
			t.Errorf("request %d (replica %d): %s", i, i%3, a)
			continue
		}
		if !bytes.Equal(a.body, answers[0].body) {
			t.Errorf("request %d (replica %d) got other bytes than request 0", i, i%3)
		}
		if a.cacheStatus == csStored {
			stored++
		} else if !slices.Contains([]string{csCollapsed, csCollapsedShared, csHit, csSharedHit}, a.cacheStatus) {
			t.Errorf("request %d (replica %d): Cache-Status %q", i, i%3, a.cacheStatus)
		}
	}
	if stored != 1 {
		t.Errorf("%d answers say stored, want 1 (the one upstream call)", stored)
	}
}

// The limits are the fleet's: 36 distinct codes at once over 3 replicas
// with 2/s, burst 6, no waiting: at most 6 + 2·t + 1 upstream calls, the
// rest refused with 45011.
func TestFleetSharesTheRateLimit(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 3, rs.URL, "UPSTREAM_RPS=2", "UPSTREAM_BURST=6", "UPSTREAM_MAX_WAIT=0s")
	assertFleetKeepsTheLimit(t, rig, "limit")
}

// With Redis unreachable from the start each replica keeps 1/FLEET_SIZE of
// the limits, so the fleet still stays under the app's.
func TestFleetLimitHoldsWhileRedisIsDown(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	nothing := "redis://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "/0"
	rig := startFleet(t, fake, 3, nothing, "UPSTREAM_RPS=2", "UPSTREAM_BURST=6", "UPSTREAM_MAX_WAIT=0s")
	assertFleetKeepsTheLimit(t, rig, "down")
}

// assertFleetKeepsTheLimit sends 36 distinct codes at once over the
// replicas of a fleet limited to 2/s, burst 6, without waiting.
func assertFleetKeepsTheLimit(t *testing.T, rig *fleetRig, prefix string) {
	t.Helper()
	rig.warmTokens(t)
	before := rig.fake.Calls(fleetCodePath)
	scenes := make([]string, 36)
	for i := range scenes {
		scenes[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	answers, elapsed := rig.askAllAtOnce(scenes)
	calls := rig.fake.Calls(fleetCodePath) - before
	images, refused := 0, 0
	for i, a := range answers {
		switch {
		case a.image():
			images++
		case a.errcode == 45011:
			refused++
		default:
			t.Errorf("code %d (replica %d): %s, want an image or errcode 45011", i, i%len(rig.replicas), a)
		}
	}
	// The limiter's clock runs while the requests arrive: the bound grows
	// with the time measured, so a slow machine loosens it.
	bound := 6 + 2*elapsed.Seconds() + 1
	if float64(calls) > bound {
		t.Errorf("36 distinct codes over %d replicas sent %d upstream calls in %v; the fleet's limit allows at most 6 + 2·t + 1 = %.1f",
			len(rig.replicas), calls, elapsed.Round(time.Millisecond), bound)
	}
	if images != calls || images == 0 {
		t.Errorf("%d images answered for %d upstream calls (want equal, and some)", images, calls)
	}
	t.Logf("%d upstream calls, %d refused with 45011, in %v", calls, refused, elapsed.Round(time.Millisecond))
}

// A 45009 one replica saw closes the endpoint for the fleet: the others
// answer it without calling WeChat.
func TestFleetSharesQuotaCooldowns(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 3, rs.URL)
	before := fake.Calls(fleetCodePath)
	fake.FailNextErrcode(fleetCodePath, 1, 45009)
	if a := rig.ask(rig.replicas[0], "quota-0"); a.errcode != 45009 {
		t.Fatalf("replica 0: %s, want WeChat's 45009", a)
	}
	for r := 1; r < len(rig.replicas); r++ {
		if a := rig.ask(rig.replicas[r], fmt.Sprintf("quota-%d", r)); a.errcode != 45009 {
			t.Errorf("replica %d after replica 0 saw 45009: %s, want 45009 answered locally", r, a)
		}
	}
	if got := fake.Calls(fleetCodePath) - before; got != 1 {
		t.Errorf("%d upstream calls, want 1: only the replica that met 45009 may have called WeChat", got)
	}
}

// Classic tokens end each other: one fetch for the fleet, and no call made
// with a token another replica's fetch has killed.
func TestFleetSharesTheClassicToken(t *testing.T) {
	// A replaced classic token dies at once (WeChat gives it 5 minutes):
	// a replica using a token another one replaced would get 40001.
	fake := newFleetFake(t, wechattest.Options{ClassicGrace: time.Nanosecond})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 3, rs.URL, "TOKEN_MODE=classic")
	for r, p := range rig.replicas {
		if a := rig.ask(p, fmt.Sprintf("classic-%d", r)); !a.image() {
			t.Errorf("replica %d: %s", r, a)
		}
	}
	if got := fake.Calls("/cgi-bin/token"); got != 1 {
		t.Errorf("3 classic-mode replicas fetched %d tokens, want 1", got)
	}
	calls := fake.Requests(fleetCodePath)
	tokens := map[string]bool{}
	for _, c := range calls {
		tokens[c.Query.Get("access_token")] = true
	}
	if len(calls) != 3 || len(tokens) != 1 {
		t.Errorf("%d upstream code calls with %d distinct tokens, want 3 with 1 (a replay means a dead token was used)", len(calls), len(tokens))
	}
}

// Redis killed under load: every request is still answered; a replica
// started meanwhile serves; sharing comes back with Redis.
func TestFleetSurvivesARedisOutage(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	// Limits high enough that the load below never queues: every answer
	// should be an image.
	rig := startFleet(t, fake, 3, rs.URL, "UPSTREAM_RPS=1000", "UPSTREAM_BURST=1000")
	assertFleetSharesImages(t, rig, 2, "before")

	var (
		mu       sync.Mutex
		failures []string
		slowest  time.Duration
		answered atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad) // before the processes are killed
	for r, p := range rig.replicas {
		wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				// A third new codes (a miss: L2, lease, limit, L2 write,
				// all on Redis), the rest repeats (hits).
				scene := fmt.Sprintf("load-%d-%d", r, k)
				if k%3 != 0 {
					scene = fmt.Sprintf("load-%d-%d", r, k%10)
				}
				start := time.Now()
				a := rig.ask(p, scene)
				d := time.Since(start)
				answered.Add(1)
				mu.Lock()
				slowest = max(slowest, d)
				if !a.image() {
					failures = append(failures, fmt.Sprintf("replica %d, %s: %s", r, scene, a))
				}
				mu.Unlock()
			}
		})
	}
	waitFor(t, "load before the outage", func() bool { return answered.Load() >= 30 })
	rs.Stop()
	killedAt, down := answered.Load(), time.Now()
	waitFor(t, "load during the outage", func() bool { return answered.Load() >= killedAt+90 })

	late := rig.add(t)
	if a := rig.ask(late, "started-while-down"); !a.image() {
		t.Errorf("a replica started while Redis is down: %s", a)
	}
	stopLoad()
	mu.Lock()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d requests answered, %d in the %v after Redis died; slowest %v", answered.Load(), answered.Load()-killedAt,
		time.Since(down).Round(time.Millisecond), slowest.Round(time.Millisecond))
	mu.Unlock()

	rs.Restart(t)
	rig.awaitSharing(t, rig.replicas[0], rig.replicas[1], "back")
	rig.awaitSharing(t, rig.replicas[2], late, "late")
}

// A Redis that accepts connections and never answers: every request is
// answered, and the sidecar did try it (timeouts counted, breaker open).
func TestFleetServesWithASilentRedis(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rig := startFleet(t, fake, 3, redistest.Silent(t))
	var scenes []string
	for i := range 10 {
		for range rig.replicas {
			scenes = append(scenes, fmt.Sprintf("silent-%d", i))
		}
	}
	answers, elapsed := rig.askAllAtOnce(scenes)
	for i, a := range answers {
		if !a.image() {
			t.Errorf("%s from replica %d: %s", scenes[i], i%3, a)
		}
	}
	t.Logf("%d requests answered in %v", len(answers), elapsed.Round(time.Millisecond))
	for r, p := range rig.replicas {
		m, _ := scrapeFleetMetrics(t, p)
		if v, _ := m.sum("wxa_sidecar_redis_requests_total", `result="timeout"`); v == 0 {
			t.Errorf("replica %d counted no Redis timeout: did it use REDIS_URL at all?", r)
		}
		if up, ok := m.sum("wxa_sidecar_redis_up"); !ok || up != 0 {
			t.Errorf("replica %d: wxa_sidecar_redis_up %s, want 0", r, sampleString(up, ok))
		}
		if s, _ := fleetStatus(t, p); s.Up || s.Breaker == "closed" {
			t.Errorf("replica %d: /status shows Redis %+v, want down with the breaker not closed", r, s)
		}
	}
}

// The password works from REDIS_URL or REDIS_PASSWORD_FILE (which wins
// over the URL's), and shows in no log line, /status or /metrics.
func TestFleetRedisPasswordNeverShows(t *testing.T) {
	password := "pw" + rand.Text()
	wrong := "wrong" + rand.Text()
	for _, via := range []string{"url", "file", "file-wins"} {
		t.Run(via, func(t *testing.T) {
			fake := newFleetFake(t, wechattest.Options{})
			rs := redistest.Start(t, redistest.Options{Password: password})
			env := []string{"LOG_LEVEL=debug"}
			redisURL := rs.URL
			if via != "url" {
				file := filepath.Join(t.TempDir(), "password")
				if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				env = append(env, "REDIS_PASSWORD_FILE="+file)
				redisURL = "redis://" + rs.Addr + "/0"
				if via == "file-wins" {
					redisURL = "redis://:" + wrong + "@" + rs.Addr + "/0"
				}
			}
			rig := startFleet(t, fake, 2, redisURL, env...)
			// Shared hits need AUTH to have worked.
			assertFleetSharesImages(t, rig, 2, via)
			for r, p := range rig.replicas {
				_, metrics := scrapeFleetMetrics(t, p)
				s, status := fleetStatus(t, p)
				if s.Addr != rs.Addr {
					t.Errorf("replica %d: /status shows Redis at %q, want %s", r, s.Addr, rs.Addr)
				}
				for what, text := range map[string]string{"stderr": p.stderr.String(), "/metrics": metrics, "/status": status} {
					for _, secret := range []string{password, wrong} {
						if strings.Contains(text, secret) {
							t.Errorf("replica %d: a Redis password appears in its %s", r, what)
						}
					}
				}
			}
		})
	}
}

// The first test, on a local 3-node Redis Cluster.
func TestFleetOnARedisCluster(t *testing.T) {
	redisURL, addrs := startRedisCluster(t)
	fake := newFleetFake(t, wechattest.Options{})
	rig := startFleet(t, fake, 3, redisURL)
	assertFleetSharesImages(t, rig, 6, "cluster")
	s, _ := fleetStatus(t, rig.replicas[0])
	for _, a := range addrs {
		if !strings.Contains(s.Addr, a) || !s.Up {
			t.Errorf("/status shows Redis %+v, want up, with every address of the URL (%s)", s, a)
		}
	}
}

// The first test, on rediss:// with a CA of the test's own; and without
// REDIS_CA_FILE the server is not trusted, yet every request is answered.
func TestFleetOnRedisOverTLS(t *testing.T) {
	redisURL, caFile := startRedisTLS(t)
	t.Run("with the CA", func(t *testing.T) {
		fake := newFleetFake(t, wechattest.Options{})
		rig := startFleet(t, fake, 3, redisURL, "REDIS_CA_FILE="+caFile)
		assertFleetSharesImages(t, rig, 4, "tls")
	})
	t.Run("without it", func(t *testing.T) {
		fake := newFleetFake(t, wechattest.Options{})
		rig := startFleet(t, fake, 2, redisURL)
		for r, p := range rig.replicas {
			if a := rig.ask(p, "untrusted"); !a.image() || a.cacheStatus == csSharedHit {
				t.Errorf("replica %d: %s, want an image not from Redis", r, a)
			}
			m, _ := scrapeFleetMetrics(t, p)
			if v, _ := m.sum("wxa_sidecar_redis_requests_total", `result="error"`); v == 0 {
				t.Errorf("replica %d counted no Redis error against a server it cannot verify", r)
			}
		}
	})
}

// startRedisCluster runs three cluster-enabled redis-servers, joins them
// with redis-cli --cluster create, waits for the cluster to be ok, and
// returns its URL in go-redis's ParseClusterURL form and the addresses.
func startRedisCluster(t *testing.T) (string, []string) {
	t.Helper()
	var addrs []string
	for range 3 {
		// nodes.conf lands in each server's own --dir.
		s := redistest.Start(t, redistest.Options{Args: []string{"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"}})
		addrs = append(addrs, s.Addr)
	}
	cli := redistest.Binary(t, "redis-cli")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, a := range addrs {
		host, port, _ := net.SplitHostPort(a)
		for {
			out, _ := exec.CommandContext(ctx, cli, "-h", host, "-p", port, "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cluster is not ok at %s:\n%s", a, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2], addrs
}

// startRedisTLS runs a redis-server that speaks TLS only, with a
// certificate for 127.0.0.1 from a CA made here, and returns its rediss://
// URL and the CA's file.
func startRedisTLS(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestPKI(t, dir)
	port := redistest.FreePort(t)
	// --port 0 after redistest's own --port: the last one wins, so the
	// server has no plain-text port at all.
	s := redistest.Start(t, redistest.Options{Port: port, Args: []string{"--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}})
	return "rediss://" + s.Addr + "/0", caFile
}

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 signed
// by it, as PEM files in dir.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wxa-sidecar test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, ca, &serverKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, blockType string, der []byte) string {
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", serverDER),
		write("server-key.pem", "PRIVATE KEY", keyDER)
}
