package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"math"
	rand2 "math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/s3test"
	"github.com/wxa-sidecar/wxa-sidecar/store"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// BenchmarkTierGet is what one image costs to read from each tier behind
// L1, as codes reads it on a miss of L1: an L2 hit (Redis), a store hit
// on a directory, a store hit on an S3-compatible server (versitygw on
// loopback). The image is 47 KB, the fake's 430 px code.
func BenchmarkTierGet(b *testing.B) {
	body := make([]byte, 47<<10)
	rand.Read(body)
	e := cache.NewEntry(body, "image/jpeg", `attachment; filename="code.jpeg"`)
	ctx := context.Background()
	const app = "wxbench"
	keys := make([]cache.Key, 64)
	for i := range keys {
		rand.Read(keys[i][:])
	}
	b.Run("l2_redis", func(b *testing.B) {
		r := redistest.Start(b, redistest.Options{})
		c, err := fleet.New(fleet.Options{URL: r.URL, Timeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		l2 := fleet.NewL2(c, fleet.L2Options{})
		for _, k := range keys {
			if err := l2.Set(ctx, app, k, e); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, err := l2.Get(ctx, app, keys[i%len(keys)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	stores := map[string]func(b *testing.B) store.Options{
		"store_file": func(b *testing.B) store.Options { return store.Options{URL: "file://" + b.TempDir()} },
		"store_s3": func(b *testing.B) store.Options {
			srv := s3test.Start(b)
			srv.MakeBucket(b, "codes")
			return store.Options{URL: "s3://codes/wxa", Endpoint: srv.Endpoint, Region: "us-east-1",
				AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey}
		},
	}
	for _, name := range []string{"store_file", "store_s3"} {
		b.Run(name, func(b *testing.B) {
			o := stores[name](b)
			o.Secrets, o.Timeout = map[string]string{app: "bench-secret"}, 5*time.Second
			s, err := store.Open(o)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(ctx)
			for _, k := range keys {
				s.Put(ctx, app, k, e)
			}
			deadline := time.Now().Add(30 * time.Second)
			for s.QueueDepth() > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := s.Get(ctx, app, keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestWeekFigure is BENCHMARKS.md's week: a shop's codes asked for seven
// simulated days, with and without a durable store, counting WeChat calls
// per distinct code. Off unless WXA_WEEK=1 (it takes minutes); the scale
// is set by WXA_WEEK_CODES (distinct codes, default 5000), WXA_WEEK_ASKS
// (asks a day, default 2500) and WXA_WEEK_DAY (one simulated day of wall
// time, default 6s; CACHE_TTL is set to it, as 24h is to a real day).
// Asks follow a Zipf law with s = 1.1 over the codes; the sidecar is
// restarted every day; Redis's maxmemory holds a fraction of the images,
// evicting the least recently used.
func TestWeekFigure(t *testing.T) {
	if os.Getenv("WXA_WEEK") != "1" {
		t.Skip("WXA_WEEK=1 runs the simulated week (minutes)")
	}
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	codes, asksPerDay := env("WXA_WEEK_CODES", 2000), env("WXA_WEEK_ASKS", 1000)
	day := time.Duration(env("WXA_WEEK_DAY", 20)) * time.Second
	redisMB := env("WXA_WEEK_REDIS_MB", 8)
	const days = 7
	// The asks, the same for both runs.
	rng := rand2.New(rand2.NewPCG(1, 2))
	zipf := newZipf(rng, 1.1, codes)
	schedule := make([][]int, days)
	distinct := map[int]bool{}
	for d := range schedule {
		for range asksPerDay {
			c := zipf()
			schedule[d] = append(schedule[d], c)
			distinct[c] = true
		}
	}
	t.Logf("scale: %d codes, %d asks a day (Zipf s=1.1), %d days of %s, CACHE_TTL=%s, a restart a day, Redis maxmemory %d MB (allkeys-lru); %d distinct codes asked",
		codes, asksPerDay, days, day, day, redisMB, len(distinct))
	for _, withStore := range []bool{false, true} {
		fake := wechattest.NewServer(wechattest.Options{})
		r := redistest.Start(t, redistest.Options{Args: []string{"--maxmemory", fmt.Sprint(redisMB, "mb"), "--maxmemory-policy", "allkeys-lru"}})
		base := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
			"WECHAT_API_URL=" + fake.URL, "REDIS_URL=" + r.URL, "CACHE_TTL=" + day.String(),
			"UPSTREAM_RPS=100000", "UPSTREAM_BURST=10000", "SHUTDOWN_TIMEOUT=10s"}
		if withStore {
			base = append(base, "STORE_URL=file://"+t.TempDir())
		}
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
		rig := &fleetRig{fake: fake, env: base, client: client}
		var storeHits, sharedHits int
		for d := range days {
			start := time.Now()
			p := rig.add(t)
			var wg sync.WaitGroup
			var mu sync.Mutex
			next := make(chan int)
			for range 4 {
				wg.Go(func() {
					for c := range next {
						a := rig.ask(p, fmt.Sprint("week-", c))
						if !a.image() {
							t.Errorf("code %d: %s", c, a)
						}
						mu.Lock()
						switch a.cacheStatus {
						case csStoreHit:
							storeHits++
						case csSharedHit:
							sharedHits++
						}
						mu.Unlock()
					}
				})
			}
			for _, c := range schedule[d] {
				next <- c
			}
			close(next)
			wg.Wait()
			stop(t, p)
			t.Logf("store %v, day %d: %s of asks; %d WeChat calls so far", withStore, d+1,
				time.Since(start).Round(10*time.Millisecond), fake.Calls(fleetCodePath))
			if left := day - time.Since(start); left > 0 {
				time.Sleep(left)
			} else {
				t.Logf("day %d took longer than its %s: CACHE_TTL expired entries within it", d+1, day)
			}
		}
		calls := fake.Calls(fleetCodePath)
		t.Logf("store %v: %d WeChat calls for %d distinct codes: %.2f per code (%d L2 hits, %d store hits, Redis evicted %s)",
			withStore, calls, len(distinct), float64(calls)/float64(len(distinct)), sharedHits, storeHits,
			grepLines(r.Command(t, "INFO", "stats"), "evicted_keys"))
		fake.Close()
		r.Stop()
	}
}

// newZipf draws 0..n-1 with P(k) ∝ 1/(k+1)^s (rand.Zipf wants s > 1 and
// draws from an unbounded tail; this is the plain finite law).
func newZipf(rng *rand2.Rand, s float64, n int) func() int {
	cdf := make([]float64, n)
	var sum float64
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		cdf[k] = sum
	}
	return func() int {
		u := rng.Float64() * sum
		lo, hi := 0, n-1
		for lo < hi {
			mid := (lo + hi) / 2
			if cdf[mid] < u {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return lo
	}
}
