// Command soak is wxa-sidecar's own chaos soak: one command, bounded in
// time, that runs a small fleet against a WeChat that misbehaves at seeded
// random times and checks, for every answer, what the README promises.
//
//	go run ./bench/soak [-duration 10m] [-seed 1] [-out DIR] [-bin PATH]
//
// What runs, all on loopback, every process stopped by its PID:
//
//   - one redis-server on a free port (no persistence), shared by
//   - three processes of the sidecar (built from this checkout unless -bin
//     names one), FLEET_SIZE=3, each with its own API, admin and
//     QRCODE_ADDR port and its own upstream port;
//   - the fake WeChat (wechattest), in this process, behind a fault layer
//     of the soak's own (faults.go): one listener per replica, so each
//     call to WeChat is known by the process that made it;
//   - a bounded client load (-rps, ~200 requests a second): code images by
//     POST on the API port and by GET /qrcode, new and repeated scenes,
//     and a passthrough API, spread over the replicas that are up.
//
// The faults (schedule.go; -faults list), each at a seeded random time: token
// revocations (plain, and "sticky": WeChat keeps returning the dead token
// to normal-mode fetches until one forces a refresh), -1 and HTTP 500
// bursts, truncated and corrupt images, latency spikes, 45011, Redis
// SIGKILLed (and restarted empty) and SIGSTOPped, a replica SIGTERMed and
// one SIGKILLed (each started again on the same ports).
//
// A violation (the command exits 1) is what no fault excuses:
//
//   - a caller sees a token error (40001, 40014, 42001);
//   - a caller gets an image that does not decode, or two different images
//     for one code;
//   - the calls reaching WeChat for the code endpoint exceed the configured
//     limit (N/s:BURST refills N-BURST a second) in some 1 s or 10 s window:
//     more than (N-BURST)*W + BURST + 2, the 2 for calls admitted at a
//     window's edges;
//   - a replica's metrics (wxa_sidecar_upstream_requests_total,
//     wxa_sidecar_upstream_errcodes_total) disagree with what WeChat
//     counted from that process, checked once the load has stopped (a
//     process's ok and errcode calls must be equal; it may count more
//     failed calls than WeChat saw, never fewer);
//   - a SIGTERMed replica takes more than SHUTDOWN_TIMEOUT (5 s) + 5 s to
//     exit, or a replica is not ready 30 s after it is started again.
//
// The rest is reported, not judged: answers by class and errcode, calls
// per distinct code (and the repeats no Redis trouble explains), RSS, open
// fds and goroutines of each process (from /proc and its metrics), the
// drain of SIGTERMed replicas, latency percentiles. -out receives
// summary.json and four PNG plots (gonum.org/v1/plot); stdout a summary.
//
// A failing -1 or 5xx answer is not a violation: a -1 burst legitimately
// reaches callers as -1 or 502. Nothing here asserts a performance figure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// config is one soak's parameters.
type config struct {
	duration time.Duration // of the load; setup and the end's checks come on top
	seed     int64
	out      string // directory for summary.json and the plots; "" writes none
	bin      string // the sidecar binary; "" builds this checkout
	replicas int
	rps      int     // client requests a second, all kinds
	newShare float64 // share of code requests that ask a scene never asked
	// limit is the code endpoint's UPSTREAM_LIMITS value, N/s:BURST.
	limitN, limitBurst int
	faults             string // comma-separated kinds; "" or "all" for every kind
	perKind            int    // faults of each kind; 0 derives it from duration
	progress           time.Duration
}

func defaultConfig() config {
	return config{duration: 10 * time.Minute, seed: 1, replicas: 3, rps: 200, newShare: 0.15,
		limitN: 30, limitBurst: 10, progress: 30 * time.Second}
}

func main() {
	cfg := defaultConfig()
	flag.DurationVar(&cfg.duration, "duration", cfg.duration, "how long the load runs (setup and checks add about a minute)")
	flag.Int64Var(&cfg.seed, "seed", cfg.seed, "seed of the fault schedule and of the load")
	flag.StringVar(&cfg.out, "out", "", "directory for summary.json and the PNG plots (created; none written when empty)")
	flag.StringVar(&cfg.bin, "bin", "", "the sidecar binary (default: go build of this checkout)")
	flag.IntVar(&cfg.rps, "rps", cfg.rps, "client requests a second")
	flag.Float64Var(&cfg.newShare, "new", cfg.newShare, "share of code requests asking a new scene")
	flag.IntVar(&cfg.limitN, "limit", cfg.limitN, "the code endpoint's limit N of N/s:BURST (UPSTREAM_LIMITS)")
	flag.IntVar(&cfg.limitBurst, "burst", cfg.limitBurst, "the code endpoint's BURST")
	flag.StringVar(&cfg.faults, "faults", "all", "fault kinds to inject, comma-separated (see -faults list)")
	flag.IntVar(&cfg.perKind, "per-kind", 0, "faults of each kind (default: one per 200 s of -duration, at least 1)")
	flag.Parse()
	if cfg.faults == "list" {
		for _, k := range allKinds {
			fmt.Printf("%-18s %s\n", k, kindHelp[k])
		}
		return
	}
	if cfg.duration < 20*time.Second || cfg.duration > time.Hour {
		fmt.Fprintln(os.Stderr, "soak: -duration must be between 20s and 1h")
		os.Exit(2)
	}
	if cfg.limitN <= cfg.limitBurst || cfg.limitBurst < 1 {
		fmt.Fprintln(os.Stderr, "soak: -limit must exceed -burst, and -burst be at least 1")
		os.Exit(2)
	}
	if cfg.duration < 5*time.Minute {
		cfg.progress = 10 * time.Second
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if sum.ViolationCount > 0 {
		os.Exit(1)
	}
}
