//go:build floodbench

// Command flood measures how much of its rate limit a flood gets through to
// WeChat, and that it never gets more: real processes of the sidecar (built
// once from this checkout, or -bin), one fake WeChat in this process
// (wechattest, behind a recorder of when each code call arrives), and one
// redis-server it starts itself (--save "" --appendonly no, a free port),
// every process stopped by PID when it ends.
//
//	go run -tags floodbench ./bench/flood [-runs 3] [-for 10s] [-clients 32] [-limit 19/s:9]
//
// Each scenario floods the replicas with -clients callers asking distinct
// codes one after another for -for, with UPSTREAM_LIMITS set to -limit on
// getwxacodeunlimit and UPSTREAM_MAX_WAIT=0s:
//
//  1. alone: one sidecar without REDIS_URL;
//  2. fleet, Redis up: 2 replicas on Redis (FLEET_SIZE=2);
//  3. fleet, Redis flapping: 3 replicas on Redis (FLEET_SIZE=3), Redis
//     paused (SIGSTOP) for -pause in every -cycle, from one -pause in.
//
// It prints one line per run and the medians: calls that reached WeChat,
// per second, against what the limit allows over the flood (burst + rate ×
// t), and the busiest 1 s and 10 s windows against rate × W + burst.
//
// The build tag keeps it out of `go vet ./...` and `go test ./...`: the
// fake (wechattest) is for main and tests only (TestPackagesKeepToTheirRooms).
// Vet it with `go vet -tags floodbench ./bench/flood`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

const codePath = wechat.PathUnlimited

type config struct {
	runs     int
	flood    time.Duration
	clients  int
	limit    string
	rate     float64
	burst    int
	pause    time.Duration
	cycle    time.Duration
	bin      string
	replicas int // of the fleet scenarios' Redis-up case
}

func main() {
	var cfg config
	flag.IntVar(&cfg.runs, "runs", 3, "runs of every scenario")
	flag.DurationVar(&cfg.flood, "for", 10*time.Second, "how long each flood lasts")
	flag.IntVar(&cfg.clients, "clients", 32, "callers, each asking one new code after another")
	flag.StringVar(&cfg.limit, "limit", "19/s:9", "UPSTREAM_LIMITS for getwxacodeunlimit: N/s:BURST")
	flag.DurationVar(&cfg.pause, "pause", 2*time.Second, "flapping: how long Redis is paused each time")
	// Not a multiple of the breaker's 5 s cool-off, or every probe would
	// meet a pause and the breakers would stay open.
	flag.DurationVar(&cfg.cycle, "cycle", 6*time.Second, "flapping: a pause starts every cycle")
	flag.StringVar(&cfg.bin, "bin", "", "the sidecar binary (default: built from this checkout)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	n, burst, ok := parseLimit(cfg.limit)
	if !ok {
		fmt.Fprintf(os.Stderr, "flood: -limit %q: want N/s:BURST, BURST below N\n", cfg.limit)
		os.Exit(2)
	}
	cfg.rate, cfg.burst = float64(n-burst), burst

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	b, err := newBench(ctx, cfg.bin)
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

// parseLimit reads N/s:BURST, as UPSTREAM_LIMITS does with UNIT s.
func parseLimit(s string) (n, burst int, ok bool) {
	spec, burstText, found := strings.Cut(s, ":")
	countText, ok := strings.CutSuffix(spec, "/s")
	n, err1 := strconv.Atoi(countText)
	burst, err2 := strconv.Atoi(burstText)
	return n, burst, found && ok && err1 == nil && err2 == nil && burst >= 1 && burst < n
}

// bench holds what every run shares: the binary and the fake.
type bench struct {
	dir  string
	bin  string
	fake *wechattest.Server
	// rec is the fake behind a recorder of the code calls' arrivals.
	rec   *httptest.Server
	mu    sync.Mutex
	calls []time.Time
	scene atomic.Int64
}

func newBench(ctx context.Context, bin string) (*bench, error) {
	b := &bench{bin: bin}
	var err error
	if b.dir, err = os.MkdirTemp("", "floodbench-"); err != nil {
		return b, fmt.Errorf("flood: %w", err)
	}
	if b.bin == "" {
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		gomod := strings.TrimSpace(string(out))
		if err != nil || gomod == "" || gomod == os.DevNull {
			return b, errors.New("flood: run it inside the wxa-sidecar module")
		}
		b.bin = filepath.Join(b.dir, "wxa-sidecar")
		build := exec.CommandContext(ctx, "go", "build", "-o", b.bin, ".")
		build.Dir = filepath.Dir(gomod)
		if out, err := build.CombinedOutput(); err != nil {
			return b, fmt.Errorf("flood: go build: %w\n%s", err, out)
		}
	}
	b.fake = wechattest.NewServer(wechattest.Options{})
	b.rec = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == codePath {
			b.mu.Lock()
			b.calls = append(b.calls, time.Now())
			b.mu.Unlock()
		}
		b.fake.ServeHTTP(w, r)
	}))
	return b, nil
}

func (b *bench) close() {
	if b.rec != nil {
		b.rec.Close()
	}
	if b.fake != nil {
		b.fake.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// result is one flood's figures.
type result struct {
	calls    int
	took     time.Duration
	allowed  float64 // burst + rate × took
	busy1    int     // the most calls in any 1 s
	busy10   int     // the most calls in any 10 s (0 if the flood is shorter)
	refused  int     // answers 45011
	failures int     // answers neither an image nor 45011
	// redisTimeouts, breakerOpened and breakerClosed are every replica's
	// Redis operations that timed out, and the times its breaker opened
	// and closed again (from its log; a failed probe is not logged).
	redisTimeouts, breakerOpened, breakerClosed int
}

func (r result) perSecond() float64 { return float64(r.calls) / r.took.Seconds() }
func (r result) used() float64      { return 100 * float64(r.calls) / r.allowed }

func (b *bench) run(ctx context.Context, cfg config) error {
	goVersion, _ := exec.CommandContext(ctx, "go", "version").Output()
	redisVersion, _ := exec.CommandContext(ctx, "redis-server", "--version").Output()
	fmt.Printf("machine: %d CPUs (nproc), %s; %s", runtime.NumCPU(), cpuModel(), goVersion)
	fmt.Printf("redis: %s", redisVersion)
	fmt.Printf("load average at the start: %s\n", loadAverage())
	fmt.Printf("command: go run -tags floodbench ./bench/flood %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("limit %s: %.4g/s, burst %d; %d callers for %v each; UPSTREAM_MAX_WAIT=0s\n\n",
		cfg.limit, cfg.rate, cfg.burst, cfg.clients, cfg.flood)

	scenarios := []struct {
		name     string
		replicas int
		redis    bool
		flap     bool
	}{
		{"alone", 1, false, false},
		{"fleet of 2, Redis up", 2, true, false},
		{fmt.Sprintf("fleet of 3, Redis paused %v in every %v", cfg.pause, cfg.cycle), 3, true, true},
	}
	fmt.Println("| scenario | run | calls | flood | calls/s (limit " + strconv.FormatFloat(cfg.rate, 'g', 4, 64) +
		") | of burst + rate × t | busiest 1 s (≤ " + strconv.Itoa(int(cfg.rate)+cfg.burst) +
		") | busiest 10 s (≤ " + strconv.Itoa(int(cfg.rate*10)+cfg.burst) + ") | 45011 | other | Redis timeouts, breaker opened/closed |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, sc := range scenarios {
		var results []result
		for run := range cfg.runs {
			r, err := b.once(ctx, cfg, sc.replicas, sc.redis, sc.flap)
			if err != nil {
				return err
			}
			results = append(results, r)
			fmt.Printf("| %s | %d | %d | %.2f s | %.2f | %.1f %% | %d | %s | %d | %d | %d, %d/%d |\n", sc.name, run+1, r.calls,
				r.took.Seconds(), r.perSecond(), r.used(), r.busy1, busy10(r), r.refused, r.failures, r.redisTimeouts,
				r.breakerOpened, r.breakerClosed)
		}
		fmt.Printf("| %s | **median** | %.0f | %.2f s | **%.2f** | **%.1f %%** | %.0f | %.0f | | | |\n", sc.name,
			medianOf(results, func(r result) float64 { return float64(r.calls) }),
			medianOf(results, func(r result) float64 { return r.took.Seconds() }),
			medianOf(results, result.perSecond), medianOf(results, result.used),
			medianOf(results, func(r result) float64 { return float64(r.busy1) }),
			medianOf(results, func(r result) float64 { return float64(r.busy10) }))
	}
	fmt.Printf("\nload average at the end: %s\n", loadAverage())
	return nil
}

func busy10(r result) string {
	if r.busy10 == 0 {
		return "—"
	}
	return strconv.Itoa(r.busy10)
}

// once starts the replicas (and Redis), floods them, and stops everything.
func (b *bench) once(ctx context.Context, cfg config, n int, withRedis, flap bool) (result, error) {
	var rs *redisServer
	env := []string{"PATH=" + os.Getenv("PATH"), "WECHAT_APP_ID=" + wechattest.DemoAppID,
		"WECHAT_APP_SECRET=" + wechattest.DemoSecret, "WECHAT_API_URL=" + b.rec.URL, "LOG_LEVEL=info", // info: the breaker closing
		"UPSTREAM_LIMITS=" + codePath + "=" + cfg.limit, "UPSTREAM_MAX_WAIT=0s"}
	if withRedis {
		var err error
		if rs, err = startRedis(ctx, b.dir); err != nil {
			return result{}, err
		}
		defer rs.stop()
		env = append(env, "REDIS_URL="+rs.url, "FLEET_SIZE="+strconv.Itoa(n))
	}
	var replicas []*replica
	defer func() {
		for _, r := range replicas {
			r.stop()
		}
	}()
	for range n {
		r, err := startReplica(ctx, b.bin, env)
		if r != nil {
			replicas = append(replicas, r)
		}
		if err != nil {
			return result{}, err
		}
	}
	// A token and a connection for each before the flood (the warm-up's
	// code calls are not counted).
	for i, r := range replicas {
		if status, _ := r.ask(ctx, fmt.Sprintf("warm-%d-%d", b.scene.Add(1), i)); status != "image" {
			return result{}, fmt.Errorf("flood: warming replica %d: %s\n%s", i, status, r.log())
		}
	}
	b.mu.Lock()
	b.calls = nil
	b.mu.Unlock()

	var (
		res  result
		mu   sync.Mutex
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	start := time.Now()
	cutoff := start.Add(cfg.flood)
	if flap {
		wg.Go(func() {
			for at := start.Add(cfg.pause); at.Before(cutoff); at = at.Add(cfg.cycle) {
				select {
				case <-time.After(time.Until(at)):
				case <-stop:
					return
				}
				rs.cmd.Process.Signal(syscall.SIGSTOP)
				select {
				case <-time.After(cfg.pause):
				case <-stop:
				}
				rs.cmd.Process.Signal(syscall.SIGCONT)
			}
		})
	}
	var clients sync.WaitGroup
	for c := range cfg.clients {
		r := replicas[c%len(replicas)]
		clients.Go(func() {
			for time.Now().Before(cutoff) && ctx.Err() == nil {
				status, _ := r.ask(ctx, fmt.Sprintf("flood-%d", b.scene.Add(1)))
				mu.Lock()
				switch status {
				case "image":
				case "45011":
					res.refused++
				default:
					res.failures++
				}
				mu.Unlock()
			}
		})
	}
	clients.Wait()
	res.took = time.Since(start)
	close(stop)
	wg.Wait()
	if rs != nil {
		rs.cmd.Process.Signal(syscall.SIGCONT)
	}

	for _, r := range replicas {
		res.redisTimeouts += r.redisTimeouts(ctx)
		res.breakerOpened += strings.Count(r.log(), "redis unreachable") + strings.Count(r.log(), "redis refuses")
		res.breakerClosed += strings.Count(r.log(), "redis reachable again")
	}
	b.mu.Lock()
	calls := slices.Clone(b.calls)
	b.mu.Unlock()
	slices.SortFunc(calls, func(a, b time.Time) int { return a.Compare(b) })
	res.calls = len(calls)
	res.allowed = float64(cfg.burst) + cfg.rate*res.took.Seconds()
	res.busy1 = busiest(calls, time.Second)
	if cfg.flood >= 10*time.Second {
		res.busy10 = busiest(calls, 10*time.Second)
	}
	return res, ctx.Err()
}

// busiest is the most calls in any window of w.
func busiest(calls []time.Time, w time.Duration) int {
	most := 0
	for i := range calls {
		j, _ := slices.BinarySearchFunc(calls, calls[i].Add(w), func(a, b time.Time) int { return a.Compare(b) })
		most = max(most, j-i)
	}
	return most
}

// --- processes ------------------------------------------------------------

type replica struct {
	cmd        *exec.Cmd
	api, admin string
	client     *http.Client
	stderr     strings.Builder
	stderrMu   sync.Mutex
}

func (r *replica) Write(p []byte) (int, error) {
	r.stderrMu.Lock()
	defer r.stderrMu.Unlock()
	return r.stderr.Write(p)
}

func (r *replica) log() string {
	r.stderrMu.Lock()
	defer r.stderrMu.Unlock()
	return r.stderr.String()
}

func startReplica(ctx context.Context, bin string, env []string) (*replica, error) {
	r := &replica{client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	var err error
	if r.api, err = freeAddr(); err != nil {
		return nil, err
	}
	if r.admin, err = freeAddr(); err != nil {
		return nil, err
	}
	r.cmd = exec.Command(bin)
	r.cmd.Env = append(slices.Clone(env), "LISTEN_ADDR="+r.api, "ADMIN_ADDR="+r.admin)
	r.cmd.Stdout, r.cmd.Stderr = io.Discard, r
	// Should this program die without stopping them, the replicas go too.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("flood: start the sidecar: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := http.Get("http://" + r.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r, fmt.Errorf("flood: a replica was not ready within 15s:\n%s", r.log())
}

// stop kills the replica by its PID and waits for it.
func (r *replica) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.client.CloseIdleConnections()
}

// ask posts {"scene":scene} to the code endpoint: "image", "45011", or
// what else came back.
func (r *replica) ask(ctx context.Context, scene string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.api+codePath,
		strings.NewReader(`{"scene":"`+scene+`"}`))
	if err != nil {
		return err.Error(), err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return err.Error(), err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err.Error(), err
	case resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "image/jpeg":
		return "image", nil
	case strings.Contains(string(body), `"errcode":45011`):
		return "45011", nil
	}
	return fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, body), nil
}

// redisTimeouts is wxa_sidecar_redis_requests_total{result="timeout"},
// every op.
func (r *replica) redisTimeouts(ctx context.Context) int {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.admin+"/metrics", nil)
	resp, err := r.client.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	total := 0.0
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "wxa_sidecar_redis_requests_total{") && strings.Contains(line, `result="timeout"`) {
			if i := strings.LastIndexByte(line, ' '); i > 0 {
				v, _ := strconv.ParseFloat(line[i+1:], 64)
				total += v
			}
		}
	}
	return int(total)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("flood: a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

type redisServer struct {
	cmd *exec.Cmd
	url string
}

// startRedis runs redis-server on a free loopback port, without
// persistence, and waits until it answers.
func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	s := &redisServer{url: "redis://" + addr + "/0"}
	s.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--loglevel", "warning")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("flood: redis-server (Debian: apt-get install redis-server): %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if rdb.Ping(ctx).Err() == nil {
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("flood: redis-server did not answer on %s", addr)
}

// stop resumes (a paused server ignores SIGKILL's wait otherwise) and
// kills the server by its PID, and waits for it.
func (s *redisServer) stop() {
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// --- the machine ------------------------------------------------------------

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
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

func medianOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
