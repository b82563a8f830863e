//go:build fleetbench

// Command fleet measures the shared tier (REDIS_URL) end to end, on
// loopback: real processes of the sidecar (built once from this checkout),
// one fake WeChat in this process (wechattest, where upstream calls are
// counted), and one redis-server (redistest.Launch: no persistence, a free
// port), every process stopped by PID when it ends.
//
//	go run -tags fleetbench ./bench/fleet [-runs 3] [-codes 20] [-hits 2000] [-misses 300]
//
// It prints Markdown tables, one line per run and the medians of the runs:
//
//  1. Quota economy: upstream calls per distinct code with 1, 3 and 10
//     replicas, before (no REDIS_URL) and after (REDIS_URL, FLEET_SIZE=N).
//     Sequential: each of -codes distinct codes asked of every replica, one
//     after another. Concurrent: one code asked by every replica at once
//     (-callers callers on each), the fake answering after -latency;
//     -rounds codes, one after another.
//  2. An L2 hit against an L1 hit, from the client's side over HTTP: -hits
//     codes fetched once on replica A; in each run a replica B that never
//     saw them asks each twice (its L2 hit, then its L1 hit). Then what
//     each kind of request costs in Redis: round trips by op (the replica's
//     metrics), their time, and the commands Redis ran (INFO commandstats).
//  3. What a miss pays for the lease: -misses fresh codes, each asked of a
//     replica without REDIS_URL and of one with it (same code, alternating
//     which goes first), the fake answering at once; then each again (L1
//     hits on both). (Part 2 counts what a miss costs in Redis.)
//
// UPSTREAM_RPS and UPSTREAM_BURST are 10 000, so the limiter is never what
// is measured. One full run of the defaults takes about two minutes on a
// 2-vCPU VM.
//
// The build tag keeps it out of `go vet ./...` and `go test ./...`: the
// fake (wechattest) is for main and tests only (TestPackagesKeepToTheirRooms),
// and this is neither. Vet it with `go vet -tags fleetbench ./bench/fleet`.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

const codePath = "/wxa/getwxacodeunlimit"

// Cache-Status values of the contract.
const (
	csHit       = "wxa-sidecar; hit"
	csSharedHit = "wxa-sidecar; hit; detail=shared"
	csStored    = "wxa-sidecar; fwd=uri-miss; stored"
)

type config struct {
	runs, codes, rounds, callers, hits, misses int
	fetchers                                   int
	replicas                                   []int
	latency                                    time.Duration
}

func main() {
	var cfg config
	flag.IntVar(&cfg.runs, "runs", 3, "runs of every measurement")
	flag.IntVar(&cfg.codes, "codes", 20, "quota economy, sequential: distinct codes asked of every replica")
	flag.IntVar(&cfg.rounds, "rounds", 3, "quota economy, concurrent: codes, one after another")
	flag.IntVar(&cfg.callers, "callers", 5, "quota economy, concurrent: callers of the code on each replica")
	flag.IntVar(&cfg.hits, "hits", 2000, "L2 against L1: codes timed (each an L2 hit, then an L1 hit)")
	flag.IntVar(&cfg.fetchers, "fetchers", 2, "L2 against L1: workers fetching the codes on A (more saturate the CPUs)")
	flag.IntVar(&cfg.misses, "misses", 300, "the lease's cost: fresh codes timed on each replica")
	replicas := flag.String("replicas", "1,3,10", "fleet sizes of the quota economy")
	flag.DurationVar(&cfg.latency, "latency", 300*time.Millisecond, "the fake's latency in the concurrent case")
	timeout := flag.Duration("timeout", 6*time.Minute, "give up after this long")
	flag.Parse()
	for f := range strings.SplitSeq(*replicas, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 50 {
			fmt.Fprintf(os.Stderr, "fleet: -replicas: %q is not a fleet size (1-50)\n", f)
			os.Exit(2)
		}
		cfg.replicas = append(cfg.replicas, n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	b, err := newBench(ctx)
	if err == nil {
		err = b.run(ctx, cfg)
	}
	b.close()
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// bench holds what every measurement shares: the binary, the fake, Redis.
type bench struct {
	dir   string
	bin   string
	fake  *wechattest.Server
	redis *redistest.Server
	rdb   *redis.Client
	scene int // a counter, so that every code asked is a fresh one
	start time.Time
	// cpuAtStart is /proc/stat's cpu line when it began: a shared VM's
	// steal time is most of its noise.
	cpuAtStart []int64
}

func newBench(ctx context.Context) (*bench, error) {
	b := &bench{start: time.Now(), cpuAtStart: cpuTicks()}
	var err error
	if b.dir, err = os.MkdirTemp("", "fleetbench-"); err != nil {
		return b, fmt.Errorf("fleet: %w", err)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return b, err
	}
	b.bin = filepath.Join(b.dir, "wxa-sidecar")
	build := exec.CommandContext(ctx, "go", "build", "-o", b.bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return b, fmt.Errorf("fleet: go build: %w\n%s", err, out)
	}
	b.fake = wechattest.NewServer(wechattest.Options{})
	if b.redis, err = redistest.Launch(b.dir, redistest.Options{}); err != nil {
		return b, fmt.Errorf("fleet: %w", err)
	}
	b.rdb = redis.NewClient(&redis.Options{Addr: b.redis.Addr})
	return b, nil
}

func (b *bench) close() {
	if b.rdb != nil {
		b.rdb.Close()
	}
	if b.redis != nil {
		b.redis.Stop()
	}
	if b.fake != nil {
		b.fake.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("fleet: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("fleet: run it inside the wxa-sidecar module")
	}
	return filepath.Dir(gomod), nil
}

func (b *bench) run(ctx context.Context, cfg config) error {
	nproc := runtime.NumCPU()
	goVersion, _ := exec.CommandContext(ctx, "go", "version").Output()
	redisVersion, _ := exec.CommandContext(ctx, "redis-server", "--version").Output()
	fmt.Printf("machine: %d CPUs (nproc), %s; %s", nproc, cpuModel(), goVersion)
	fmt.Printf("redis: %s", redisVersion)
	// Anything else busy on the machine is in every figure below.
	fmt.Printf("load average at the start: %s\n", loadAverage())
	fmt.Printf("command: go run -tags fleetbench ./bench/fleet %s\n\n", strings.Join(os.Args[1:], " "))

	for _, section := range []func(context.Context, config) error{b.quotaEconomy, b.l2AgainstL1, b.leaseCost} {
		start := time.Now()
		if err := section(ctx, cfg); err != nil {
			return err
		}
		fmt.Printf("(%s)\n\n", time.Since(start).Round(100*time.Millisecond))
	}
	fmt.Printf("total time: %s; steal time over the run: %.1f%% of all CPU time (what the host took from this VM); "+
		"load average at the end: %s\n", time.Since(b.start).Round(time.Second), stealPercent(b.cpuAtStart, cpuTicks()), loadAverage())
	return nil
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// cpuTicks is the first line of /proc/stat: user nice system idle iowait
// irq softirq steal, in ticks; nil where there is none.
func cpuTicks() []int64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return nil
	}
	var ticks []int64
	for _, f := range fields[1:9] {
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks = append(ticks, n)
	}
	return ticks
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute figures.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

func stealPercent(before, after []int64) float64 {
	if len(before) != 8 || len(after) != 8 {
		return 0
	}
	var total int64
	for i := range after {
		total += after[i] - before[i]
	}
	if total == 0 {
		return 0
	}
	return 100 * float64(after[7]-before[7]) / float64(total)
}

// fresh returns a scene no replica has seen.
func (b *bench) fresh(prefix string) string {
	b.scene++
	return prefix + "-" + strconv.Itoa(b.scene)
}

// --- 1. Quota economy ---------------------------------------------------

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

// --- 2. L2 hit against L1 hit -------------------------------------------

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

// --- 3. What a miss pays for the lease ----------------------------------

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

// --- Replicas -----------------------------------------------------------

type replica struct {
	cmd         *exec.Cmd
	api, admin  string
	stderr      bytes.Buffer
	stderrGuard sync.Mutex
}

func (r *replica) Write(p []byte) (int, error) {
	r.stderrGuard.Lock()
	defer r.stderrGuard.Unlock()
	return r.stderr.Write(p)
}

func (r *replica) log() string {
	r.stderrGuard.Lock()
	defer r.stderrGuard.Unlock()
	return r.stderr.String()
}

type fleet struct {
	replicas []*replica
	clients  []*http.Client // one per replica, so each keeps its connections
}

// startFleet starts n replicas of the binary against the fake, sharing
// redisURL (none when empty), and waits until each is ready and holds a
// token. Stop it even when it returns an error.
func (b *bench) startFleet(ctx context.Context, n int, redisURL string) (*fleet, error) {
	fl := &fleet{}
	env := []string{"PATH=" + os.Getenv("PATH"), "WECHAT_APP_ID=" + wechattest.DemoAppID,
		"WECHAT_APP_SECRET=" + wechattest.DemoSecret, "WECHAT_API_URL=" + b.fake.URL, "LOG_LEVEL=warn",
		// Generous: the limiter must not be what is measured.
		"UPSTREAM_RPS=10000", "UPSTREAM_BURST=10000"}
	if redisURL != "" {
		env = append(env, "REDIS_URL="+redisURL, "FLEET_SIZE="+strconv.Itoa(n))
	}
	for range n {
		r := &replica{}
		var err error
		if r.api, err = freeAddr(); err != nil {
			return fl, err
		}
		if r.admin, err = freeAddr(); err != nil {
			return fl, err
		}
		r.cmd = exec.Command(b.bin)
		r.cmd.Env = append(slices.Clone(env), "LISTEN_ADDR="+r.api, "ADMIN_ADDR="+r.admin)
		r.cmd.Stdout, r.cmd.Stderr = io.Discard, r
		// Should this program die without stopping them, the replicas go too.
		r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := r.cmd.Start(); err != nil {
			return fl, fmt.Errorf("fleet: start the sidecar: %w", err)
		}
		fl.replicas = append(fl.replicas, r)
		fl.clients = append(fl.clients, &http.Client{Timeout: 30 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 64}})
	}
	for _, r := range fl.replicas {
		if err := waitReady(ctx, r); err != nil {
			return fl, err
		}
	}
	// A token for each, and a connection to each, before anything is timed.
	for i := range fl.replicas {
		if a := fl.ask(ctx, i, fmt.Sprintf("warm-%p-%d", fl, i)); a.err != nil {
			return fl, fmt.Errorf("fleet: warming replica %d: %w", i, a.err)
		}
	}
	return fl, nil
}

func waitReady(ctx context.Context, r *replica) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := http.Get("http://" + r.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("fleet: a replica was not ready within 15s:\n%s", r.log())
}

// stop kills every replica by its PID and waits for it.
func (fl *fleet) stop() {
	for i, r := range fl.replicas {
		r.cmd.Process.Kill()
		r.cmd.Wait()
		fl.clients[i].CloseIdleConnections()
	}
	fl.replicas, fl.clients = nil, nil
}

type answer struct {
	cacheStatus string
	body        []byte
	took        time.Duration
	err         error
}

// ask posts {"scene":scene} to replica i's code endpoint and times it from
// the first byte sent to the last received; an answer that is not an
// image is an error.
func (fl *fleet) ask(ctx context.Context, i int, scene string) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+fl.replicas[i].api+codePath,
		strings.NewReader(`{"scene":"`+scene+`"}`))
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := fl.clients[i].Do(req)
	if err != nil {
		return answer{err: err}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a := answer{cacheStatus: resp.Header.Get("Cache-Status"), body: body, took: time.Since(start), err: err}
	if a.err == nil && (resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg") {
		a.err = fmt.Errorf("HTTP %d %s: %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return a
}

// askEach asks every scene of replica i, one after another, and expects
// Cache-Status want (any, when empty).
func (fl *fleet) askEach(ctx context.Context, i int, scenes []string, want string) error {
	for _, scene := range scenes {
		a := fl.ask(ctx, i, scene)
		if a.err != nil {
			return fmt.Errorf("fleet: %s on replica %d: %w", scene, i, a.err)
		}
		if want != "" && a.cacheStatus != want {
			return fmt.Errorf("fleet: %s on replica %d: Cache-Status %q, want %q", scene, i, a.cacheStatus, want)
		}
	}
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fleet: a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(ctx context.Context, workers, n int, f func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// --- Redis --------------------------------------------------------------

// flush empties Redis between runs, so no run finds another's entries.
func (b *bench) flush(ctx context.Context) error {
	if err := b.rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("fleet: FLUSHALL: %w", err)
	}
	return nil
}

// countRedis runs f, n requests to replica i of fl, and returns what
// they cost in Redis per request: the replica's round trips (from its
// metrics) by op, and the commands Redis ran (INFO commandstats, the
// commands of Lua scripts included, INFO's own left out), as table cells.
func (b *bench) countRedis(ctx context.Context, fl *fleet, i, n int, f func() error) (string, error) {
	tripsBefore, secsBefore, err := fl.redisRoundTrips(ctx, i)
	if err != nil {
		return "", err
	}
	before, err := b.commandStats(ctx)
	if err != nil {
		return "", err
	}
	if err := f(); err != nil {
		return "", err
	}
	after, err := b.commandStats(ctx)
	if err != nil {
		return "", err
	}
	tripsAfter, secsAfter, err := fl.redisRoundTrips(ctx, i)
	if err != nil {
		return "", err
	}
	perRequest := func(before, after map[string]int, skip string) (float64, string) {
		var total int
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(after)) {
			d := after[name] - before[name]
			if name == skip || d == 0 {
				continue
			}
			total += d
			if skip == "info" {
				name = strings.ToUpper(name)
			}
			parts = append(parts, fmt.Sprintf("%s %.2f", name, float64(d)/float64(n)))
		}
		if len(parts) == 0 {
			return 0, "none"
		}
		return float64(total) / float64(n), strings.Join(parts, ", ")
	}
	trips, byOp := perRequest(tripsBefore, tripsAfter, "")
	cmds, byCommand := perRequest(before, after, "info")
	var inRedis time.Duration
	var inRedisByOp []string
	for _, op := range slices.Sorted(maps.Keys(secsAfter)) {
		d := time.Duration(float64(time.Second) * (secsAfter[op] - secsBefore[op]) / float64(n))
		if d > 0 {
			inRedis += d
			inRedisByOp = append(inRedisByOp, op+" "+us(d))
		}
	}
	if len(inRedisByOp) > 0 {
		return fmt.Sprintf("%.2f | %s | %s (%s) | %.2f: %s", trips, byOp, us(inRedis), strings.Join(inRedisByOp, ", "), cmds, byCommand), nil
	}
	return fmt.Sprintf("%.2f | %s | 0 | %.2f: %s", trips, byOp, cmds, byCommand), nil
}

// metrics scrapes replica i's /metrics: each sample by its series as
// printed, name{labels}.
func (fl *fleet) metrics(ctx context.Context, i int) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+fl.replicas[i].admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := fl.clients[i].Do(req)
	if err != nil {
		return nil, fmt.Errorf("fleet: /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fleet: /metrics: %w", err)
	}
	samples := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("fleet: /metrics line %q: %w", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, nil
}

// label is the value of label name in a series name{...}.
func label(series, name string) string {
	_, v, _ := strings.Cut(series, name+`="`)
	v, _, _ = strings.Cut(v, `"`)
	return v
}

// redisRoundTrips reads replica i's wxa_sidecar_redis_requests_total,
// summed by op, and the seconds its Redis calls took, by op
// (wxa_sidecar_redis_request_duration_seconds_sum).
func (fl *fleet) redisRoundTrips(ctx context.Context, i int) (trips map[string]int, seconds map[string]float64, err error) {
	samples, err := fl.metrics(ctx, i)
	if err != nil {
		return nil, nil, err
	}
	trips, seconds = map[string]int{}, map[string]float64{}
	for series, v := range samples {
		switch name, _, _ := strings.Cut(series, "{"); name {
		case "wxa_sidecar_redis_requests_total":
			trips[label(series, "op")] += int(v)
		case "wxa_sidecar_redis_request_duration_seconds_sum":
			seconds[label(series, "op")] += v
		}
	}
	if len(trips) == 0 {
		return nil, nil, errors.New("fleet: /metrics has no wxa_sidecar_redis_requests_total")
	}
	return trips, seconds, nil
}

// redisFailures is how many Redis calls of replica i failed (error,
// timeout, or skipped while the breaker was open), by op and result.
func (fl *fleet) redisFailures(ctx context.Context, i int) (map[string]int, error) {
	samples, err := fl.metrics(ctx, i)
	if err != nil {
		return nil, err
	}
	failures := map[string]int{}
	for series, v := range samples {
		result := label(series, "result")
		if strings.HasPrefix(series, "wxa_sidecar_redis_requests_total{") && v > 0 &&
			(result == "error" || result == "timeout" || result == "breaker_open") {
			failures[label(series, "op")+" "+result] += int(v)
		}
	}
	return failures, nil
}

// commandStats is INFO commandstats as calls by command name.
func (b *bench) commandStats(ctx context.Context) (map[string]int, error) {
	info, err := b.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("fleet: INFO commandstats: %w", err)
	}
	stats := map[string]int{}
	for line := range strings.SplitSeq(info, "\n") {
		// cmdstat_get:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		if n, err := strconv.Atoi(calls); err == nil {
			stats[name] = n
		}
	}
	return stats, nil
}

// --- Figures ------------------------------------------------------------

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

// quantile is the nearest-rank q-quantile of d.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func medianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// us prints d in microseconds.
func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + " µs"
}
