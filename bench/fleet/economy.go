//go:build fleetbench

package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"
)

type economy struct {
	seq, conc   float64 // upstream calls per distinct code
	seqShared   int     // answers that were shared hits, sequential case
	concSlowest time.Duration
}

func (b *bench) quotaEconomy(ctx context.Context, cfg config) error {
	fmt.Printf("## 1. Quota economy: upstream calls per distinct code\n\n")
	fmt.Printf("sequential: %d codes, each asked of every replica in turn; concurrent: %d codes one after another, each asked by %d callers on every replica at once, the fake answering after %s\n\n",
		cfg.codes, cfg.rounds, cfg.callers, cfg.latency)
	fmt.Println("| run | replicas | mode | sequential: calls/code | shared hits | concurrent: calls/code | slowest answer (median of rounds) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	type cell struct {
		n     int
		after bool
	}
	results := map[cell][]economy{}
	for run := 1; run <= cfg.runs; run++ {
		for _, n := range cfg.replicas {
			for _, after := range []bool{false, true} {
				e, err := b.economyOnce(ctx, cfg, n, after)
				if err != nil {
					return err
				}
				c := cell{n, after}
				results[c] = append(results[c], e)
				fmt.Printf("| %d | %d | %s | %.2f | %d of %d | %.2f | %s |\n", run, n, mode(after), e.seq, e.seqShared,
					cfg.codes*n, e.conc, e.concSlowest.Round(time.Millisecond))
			}
		}
	}
	fmt.Printf("\nmedians of %d runs:\n\n", cfg.runs)
	fmt.Println("| replicas | sequential, before | sequential, after | concurrent, before | concurrent, after | slowest concurrent answer, before / after |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, n := range cfg.replicas {
		bf, af := results[cell{n, false}], results[cell{n, true}]
		seq := func(e economy) float64 { return e.seq }
		conc := func(e economy) float64 { return e.conc }
		slow := func(e economy) float64 { return float64(e.concSlowest) }
		fmt.Printf("| %d | %.2f | %.2f | %.2f | %.2f | %s / %s |\n", n, medianOf(bf, seq), medianOf(af, seq),
			medianOf(bf, conc), medianOf(af, conc),
			time.Duration(medianOf(bf, slow)).Round(time.Millisecond), time.Duration(medianOf(af, slow)).Round(time.Millisecond))
	}
	fmt.Println()
	return nil
}

func mode(after bool) string {
	if after {
		return "after (REDIS_URL)"
	}
	return "before"
}

func (b *bench) economyOnce(ctx context.Context, cfg config, n int, after bool) (economy, error) {
	var e economy
	redisURL := ""
	if after {
		redisURL = b.redis.URL
	}
	fl, err := b.startFleet(ctx, n, redisURL)
	defer fl.stop()
	if err != nil {
		return e, err
	}
	b.fake.SetLatency(0)

	before := b.fake.Calls(codePath)
	for i := range cfg.codes {
		scene := b.fresh("seq")
		// The first replica asked turns with the code, so each replica
		// both fetches and finds others' images.
		for k := range n {
			a := fl.ask(ctx, (i+k)%n, scene)
			if a.err != nil {
				return e, fmt.Errorf("fleet: sequential, %d replicas, code %s: %w", n, scene, a.err)
			}
			if a.cacheStatus == csSharedHit {
				e.seqShared++
			}
		}
	}
	e.seq = float64(b.fake.Calls(codePath)-before) / float64(cfg.codes)

	b.fake.SetLatency(cfg.latency)
	defer b.fake.SetLatency(0)
	before = b.fake.Calls(codePath)
	var slowest []time.Duration
	for range cfg.rounds {
		scene := b.fresh("conc")
		answers := make([]answer, n*cfg.callers)
		release := make(chan struct{})
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				<-release
				answers[i] = fl.ask(ctx, i%n, scene)
			})
		}
		close(release)
		wg.Wait()
		var first []byte
		var longest time.Duration
		for _, a := range answers {
			if a.err != nil {
				return e, fmt.Errorf("fleet: concurrent, %d replicas, code %s: %w", n, scene, a.err)
			}
			if first == nil {
				first = a.body
			} else if !bytes.Equal(first, a.body) {
				return e, fmt.Errorf("fleet: concurrent, %d replicas, code %s: two different images", n, scene)
			}
			longest = max(longest, a.took)
		}
		slowest = append(slowest, longest)
	}
	e.conc = float64(b.fake.Calls(codePath)-before) / float64(cfg.rounds)
	e.concSlowest = median(slowest)
	return e, nil
}
