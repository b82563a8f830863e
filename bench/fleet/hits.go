//go:build fleetbench

package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

type hitCosts struct {
	l1, l2 []time.Duration
	// unexpected counts the answers whose Cache-Status was not the one
	// timed (a Redis call that timed out under load, say): left out of
	// the figures, and reported.
	unexpected map[string]int
	size       int
	counts     []string // table rows: Redis per request, by kind
}

// countedRequests is how many requests of each kind the Redis counts
// divide by.
const countedRequests = 100

func (b *bench) l2AgainstL1(ctx context.Context, cfg config) error {
	fmt.Printf("## 2. An L2 hit against an L1 hit (client's side, HTTP on loopback)\n\n")
	fmt.Printf("%d codes fetched on replica A; in each run, each then asked twice of a replica B that never saw them "+
		"(another B each run): an L2 hit, then an L1 hit\n\n", cfg.hits)
	var l1Med, l1P90, l2Med, l2P90 []time.Duration
	var size int
	var counts [][]string
	// One replica A fetches the codes, once: fetching is most of the time
	// this takes. Each run times another replica B, which never saw them.
	if err := b.flush(ctx); err != nil {
		return err
	}
	fl, err := b.startFleet(ctx, 1+cfg.runs, b.redis.URL)
	defer fl.stop()
	if err != nil {
		return err
	}
	scenes := make([]string, cfg.hits)
	for i := range scenes {
		scenes[i] = b.fresh("hit")
	}
	// By a few workers at once: the misses are not what is timed here.
	if err := parallel(ctx, cfg.fetchers, len(scenes), func(i int) error {
		if a := fl.ask(ctx, 0, scenes[i]); a.err != nil {
			return fmt.Errorf("fleet: fetching %s on A: %w", scenes[i], a.err)
		}
		return nil
	}); err != nil {
		return err
	}
	failures, err := fl.redisFailures(ctx, 0)
	if err != nil {
		return err
	}
	fmt.Printf("Redis calls of A that failed while it fetched them: %s\n\n", describe(failures))
	fmt.Println("| run | L1 hit median | L1 p90 | L2 hit median | L2 p90 | L2 − L1 (medians) | image | left out | Redis calls of B that failed |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for run := 1; run <= cfg.runs; run++ {
		h, err := b.hitsOnce(ctx, fl, run, scenes)
		if err != nil {
			return err
		}
		counts = append(counts, h.counts)
		failures, err := fl.redisFailures(ctx, run)
		if err != nil {
			return err
		}
		l1Med, l1P90 = append(l1Med, median(h.l1)), append(l1P90, quantile(h.l1, 0.9))
		l2Med, l2P90 = append(l2Med, median(h.l2)), append(l2P90, quantile(h.l2, 0.9))
		size = h.size
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %d B | %s | %s |\n", run, us(l1Med[run-1]), us(l1P90[run-1]), us(l2Med[run-1]),
			us(l2P90[run-1]), us(l2Med[run-1]-l1Med[run-1]), h.size, describe(h.unexpected), describe(failures))
	}
	fmt.Printf("| median of %d | %s | %s | %s | %s | %s | %d B | | |\n\n", cfg.runs, us(median(l1Med)), us(median(l1P90)),
		us(median(l2Med)), us(median(l2P90)), us(median(l2Med)-median(l1Med)), size)

	fmt.Printf("Redis per request, %d requests each (fresh codes fetched on A, then asked twice of the run's B), "+
		"after the timed passes: round trips "+
		"as the replica counts them (wxa_sidecar_redis_requests_total, by op), the time they took "+
		"(wxa_sidecar_redis_request_duration_seconds_sum), and the commands Redis ran (INFO commandstats: "+
		"those inside a Lua script count too)\n\n", countedRequests)
	fmt.Println("| run | request | round trips | by op | time in Redis calls | commands Redis ran |")
	fmt.Println("|---|---|---|---|---|---|")
	for run, rows := range counts {
		for _, row := range rows {
			fmt.Printf("| %d | %s |\n", run+1, row)
		}
	}
	fmt.Println()
	return nil
}

// hitsOnce times, on replica b of fl, an L2 hit and then an L1 hit of
// each scene (fetched on replica 0 already and never asked of b), then
// counts what each kind of request costs in Redis.
func (b *bench) hitsOnce(ctx context.Context, fl *fleet, r int, scenes []string) (hitCosts, error) {
	h := hitCosts{unexpected: map[string]int{}}
	for _, scene := range scenes {
		a := fl.ask(ctx, r, scene)
		if a.err != nil {
			return h, fmt.Errorf("fleet: L2 hit %s on B: %w", scene, a.err)
		}
		if a.cacheStatus == csSharedHit {
			h.l2 = append(h.l2, a.took)
		} else {
			h.unexpected["L2 ask: "+strconv.Quote(a.cacheStatus)]++
		}
		h.size = len(a.body)
		a = fl.ask(ctx, r, scene)
		if a.err != nil {
			return h, fmt.Errorf("fleet: L1 hit %s on B: %w", scene, a.err)
		}
		if a.cacheStatus == csHit {
			h.l1 = append(h.l1, a.took)
		} else {
			h.unexpected["L1 ask: "+strconv.Quote(a.cacheStatus)]++
		}
	}

	// Redis, counted apart from the timed passes (and INFO's own calls
	// left out): fresh codes fetched on A, then each an L2 hit on B, then
	// an L1 hit on B.
	counted := make([]string, countedRequests)
	for i := range counted {
		counted[i] = b.fresh("count")
	}
	for _, kind := range []struct {
		name    string
		replica int
		want    string
	}{{"miss, fetched (no other replica in flight)", 0, csStored}, {"L2 hit", r, csSharedHit}, {"L1 hit", r, csHit}} {
		row, err := b.countRedis(ctx, fl, kind.replica, countedRequests, func() error {
			return fl.askEach(ctx, kind.replica, counted, kind.want)
		})
		if err != nil {
			return h, err
		}
		h.counts = append(h.counts, kind.name+" | "+row)
	}
	return h, nil
}

// describe prints counts by name, "none" for none.
func describe(counts map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
