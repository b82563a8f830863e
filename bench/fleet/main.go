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
// One file per part: economy.go (1), hits.go (2), lease.go (3); replicas.go
// starts and asks the sidecars, redis.go counts what Redis did (INFO and
// the replicas' /metrics), figures.go and machine.go are the statistics
// and the machine's state.
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
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// fresh returns a scene no replica has seen.
func (b *bench) fresh(prefix string) string {
	b.scene++
	return prefix + "-" + strconv.Itoa(b.scene)
}
