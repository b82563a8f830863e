package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// statusCounts is what /status says about lookups.
type statusCounts struct {
	Cache struct {
		Hits     float64            `json:"hits"`
		Misses   float64            `json:"misses"`
		Requests map[string]float64 `json:"requests"`
	} `json:"cache"`
	Links []struct {
		Endpoint   string  `json:"endpoint"`
		Hits       float64 `json:"hits"`
		SharedHits float64 `json:"shared_hits"`
		Misses     float64 `json:"misses"`
		Collapsed  float64 `json:"collapsed"`
	} `json:"links"`
}

func readStatusCounts(t *testing.T, p *sidecarProcess) statusCounts {
	t.Helper()
	code, body := get(t, "http://"+p.admin+"/status")
	if code != http.StatusOK {
		t.Fatalf("/status: %d", code)
	}
	var s statusCounts
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return s
}

// TestStatusCountsWhatTheMetricsCount: after L1 hits, shared hits, misses
// and collapsed waits on two replicas sharing Redis, each replica's
// /status says, result by result, what its /metrics says, for codes and
// for links.
func TestStatusCountsWhatTheMetricsCount(t *testing.T) {
	r := redistest.Start(t, redistest.Options{})
	fake := newFleetFake(t, wechattest.Options{})
	rig := startFleet(t, fake, 2, r.URL)
	a, b := rig.replicas[0], rig.replicas[1]
	rig.warmTokens(t)
	mustImage := func(p *sidecarProcess, scene string) {
		if ans := rig.ask(p, scene); !ans.image() {
			t.Fatalf("%s: %v", scene, ans)
		}
	}
	mustImage(a, "agree-1") // miss
	mustImage(a, "agree-1") // hit
	mustImage(b, "agree-1") // shared hit
	// Collapsed: five asks of one new code at once on a, while WeChat is slow.
	fake.SetLatency(400 * time.Millisecond)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() { mustImage(a, "agree-2") })
	}
	// And across replicas: b and a ask one more new code together.
	for i := range 4 {
		p := a
		if i%2 == 1 {
			p = b
		}
		wg.Go(func() { mustImage(p, "agree-3") })
	}
	wg.Wait()
	fake.SetLatency(0)
	for range 3 {
		mustLink(t, a, schemePath, `{"jump_wxa":{"path":"pages/index/index","query":"id=7"}}`)
	}
	mustLink(t, b, schemePath, `{"jump_wxa":{"path":"pages/index/index","query":"id=7"}}`)

	results := []string{"hit", "shared_hit", "store_hit", "miss", "collapsed"}
	var total = map[string]float64{}
	for i, p := range rig.replicas {
		m, _ := scrapeFleetMetrics(t, p)
		s := readStatusCounts(t, p)
		for _, result := range results {
			want, _ := m.sum("wxa_sidecar_cache_requests_total", `result="`+result+`"`)
			total[result] += want
			if got := s.Cache.Requests[result]; got != want {
				t.Errorf("replica %d: /status cache.requests[%s] = %v, /metrics %v", i, result, got, want)
			}
		}
		hit, _ := m.sum("wxa_sidecar_cache_requests_total", `result="hit"`)
		miss, _ := m.sum("wxa_sidecar_cache_requests_total", `result="miss"`)
		collapsed, _ := m.sum("wxa_sidecar_cache_requests_total", `result="collapsed"`)
		if s.Cache.Hits != hit || s.Cache.Misses != miss+collapsed {
			t.Errorf("replica %d: /status hits %v misses %v; /metrics hit %v, miss+collapsed %v",
				i, s.Cache.Hits, s.Cache.Misses, hit, miss+collapsed)
		}
		for _, l := range s.Links {
			for result, got := range map[string]float64{"hit": l.Hits, "shared_hit": l.SharedHits, "miss": l.Misses, "collapsed": l.Collapsed} {
				want, _ := m.sum("wxa_sidecar_link_requests_total", `endpoint="`+l.Endpoint+`"`, `result="`+result+`"`)
				if got != want {
					t.Errorf("replica %d: /status links %s %s = %v, /metrics %v", i, l.Endpoint, result, got, want)
				}
			}
		}
	}
	// The test means something only if every kind of lookup happened.
	for _, result := range []string{"hit", "shared_hit", "miss", "collapsed"} {
		if total[result] == 0 {
			t.Errorf("no %s lookup happened (%v): the test did not exercise it", result, total)
		}
	}
	t.Logf("lookups across the fleet: %s", strconv.Quote(func() string { b, _ := json.Marshal(total); return string(b) }()))
}
