//go:build fleetbench

package main

import (
	"context"
	"fmt"
	"time"
)

func (b *bench) leaseCost(ctx context.Context, cfg config) error {
	fmt.Printf("## 3. A miss with REDIS_URL against one without (the fake answering at once)\n\n")
	fmt.Printf("%d fresh codes, each asked of a replica without REDIS_URL and of one with it (alternating which first); then each again (L1 hits)\n\n", cfg.misses)
	fmt.Println("| run | miss, no Redis: median | p90 | miss, REDIS_URL: median | p90 | paired difference: median | L1 hit, no Redis / REDIS_URL: median |")
	fmt.Println("|---|---|---|---|---|---|---|")
	var offMed, offP90, onMed, onP90, diffMed, offHit, onHit []time.Duration
	for run := 1; run <= cfg.runs; run++ {
		off, on, offL1, onL1, err := b.missesOnce(ctx, cfg.misses)
		if err != nil {
			return err
		}
		diffs := make([]time.Duration, len(off))
		for i := range off {
			diffs[i] = on[i] - off[i]
		}
		offMed, offP90 = append(offMed, median(off)), append(offP90, quantile(off, 0.9))
		onMed, onP90 = append(onMed, median(on)), append(onP90, quantile(on, 0.9))
		diffMed = append(diffMed, median(diffs))
		offHit, onHit = append(offHit, median(offL1)), append(onHit, median(onL1))
		i := run - 1
		fmt.Printf("| %d | %s | %s | %s | %s | %s | %s / %s |\n", run, us(offMed[i]), us(offP90[i]), us(onMed[i]), us(onP90[i]),
			us(diffMed[i]), us(offHit[i]), us(onHit[i]))
	}
	fmt.Printf("| median of %d | %s | %s | %s | %s | %s | %s / %s |\n\n", cfg.runs, us(median(offMed)), us(median(offP90)),
		us(median(onMed)), us(median(onP90)), us(median(diffMed)), us(median(offHit)), us(median(onHit)))
	return nil
}

func (b *bench) missesOnce(ctx context.Context, n int) (off, on, offL1, onL1 []time.Duration, err error) {
	if err := b.flush(ctx); err != nil {
		return nil, nil, nil, nil, err
	}
	b.fake.SetLatency(0)
	// Replica 0 without Redis, replica 1 with it: a fleet of one each.
	fl, err := b.startFleet(ctx, 1, "")
	defer fl.stop()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	withRedis, err := b.startFleet(ctx, 1, b.redis.URL)
	defer withRedis.stop()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	fl.replicas = append(fl.replicas, withRedis.replicas...)
	fl.clients = append(fl.clients, withRedis.clients...)

	scenes := make([]string, n)
	for i := range scenes {
		scenes[i] = b.fresh("miss")
	}
	for pass := range 2 {
		want := csStored
		if pass == 1 {
			want = csHit
		}
		for i, scene := range scenes {
			// The same code on both, so both fetch the same image; which
			// goes first alternates, so neither always meets a warmer fake.
			order := []int{0, 1}
			if i%2 == 1 {
				order = []int{1, 0}
			}
			var took [2]time.Duration
			for _, r := range order {
				a := fl.ask(ctx, r, scene)
				if a.err != nil {
					return nil, nil, nil, nil, fmt.Errorf("fleet: %s on replica %d: %w", scene, r, a.err)
				}
				if a.cacheStatus != want {
					return nil, nil, nil, nil, fmt.Errorf("fleet: %s on replica %d: Cache-Status %q, want %q", scene, r, a.cacheStatus, want)
				}
				took[r] = a.took
			}
			if pass == 0 {
				off, on = append(off, took[0]), append(on, took[1])
			} else {
				offL1, onL1 = append(offL1, took[0]), append(onL1, took[1])
			}
		}
	}
	return off, on, offL1, onL1, nil
}
