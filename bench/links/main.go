//go:build linksbench

// Command links measures what the link memo saves: links made
// at WeChat per 1 000 link requests with a realistic repeat mix, before
// and after, one sidecar alone and three sharing a redis-server. Real
// processes of the sidecar on loopback, one fake WeChat in this process
// (wechattest, which counts the links it makes), every process stopped by
// PID when it ends.
//
//	go run -tags linksbench ./bench/links -before-rev <commit> [-runs 3] [-requests 1000] [-hot 50] [-repeat 0.8] [-latency 100ms]
//
// The mix: each request asks, with probability -repeat, one of -hot hot
// links (uniformly), else a link nobody asked before; the links are
// spread over generatescheme, generate_urllink and genwxashortlink, with
// a 7-day expiry (kept LINK_MAX_AGE, 24 h: the whole run). -workers
// callers send them at once, request i to replica i mod N, the fake
// making each link after -latency (so concurrent asks of one hot link
// meet in flight, as they do in production). The sequence
// is drawn from -seed, so every configuration sees the same requests.
//
// "before" is the sidecar built from -before-rev (git archive of that
// commit; the links were forwarded, never kept); "after" is this
// checkout. Without -before-rev only "after" is measured.
//
// The build tag keeps it out of `go vet ./...` and `go test ./...`, as
// bench/fleet: vet it with `go vet -tags linksbench ./bench/links`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

var linkPaths = []string{"/wxa/generatescheme", "/wxa/generate_urllink", "/wxa/genwxashortlink"}

type config struct {
	runs, requests, hot, workers int
	repeat                       float64
	seed                         uint64
	latency                      time.Duration
}

func main() {
	var cfg config
	flag.IntVar(&cfg.runs, "runs", 3, "runs of every configuration")
	flag.IntVar(&cfg.requests, "requests", 1000, "link requests per run")
	flag.IntVar(&cfg.hot, "hot", 50, "hot links")
	flag.Float64Var(&cfg.repeat, "repeat", 0.8, "share of requests asking a hot link")
	flag.IntVar(&cfg.workers, "workers", 16, "requests in flight at once")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the request sequence")
	flag.DurationVar(&cfg.latency, "latency", 100*time.Millisecond, "how long the fake takes to make a link")
	beforeRev := flag.String("before-rev", "", "git revision of the sidecar before the link memo; empty: after only")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()
	if cfg.requests < 1 || cfg.requests > 100_000 || cfg.hot < 1 || cfg.repeat < 0 || cfg.repeat > 1 || cfg.workers < 1 || cfg.runs < 1 {
		fmt.Fprintln(os.Stderr, "links: bad flags")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	err := run(ctx, cfg, *beforeRev)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, beforeRev string) error {
	dir, err := os.MkdirTemp("", "linksbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	bins := map[string]string{}
	if bins["after"], err = build(ctx, root, filepath.Join(dir, "after")); err != nil {
		return err
	}
	if beforeRev != "" {
		src := filepath.Join(dir, "before-src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return err
		}
		archive := exec.CommandContext(ctx, "sh", "-c", "git archive "+strconv.Quote(beforeRev)+" | tar -x -C "+strconv.Quote(src))
		archive.Dir = root
		if out, err := archive.CombinedOutput(); err != nil {
			return fmt.Errorf("links: git archive %s: %w\n%s", beforeRev, err, out)
		}
		if bins["before"], err = build(ctx, src, filepath.Join(dir, "before")); err != nil {
			return err
		}
	}
	redisAddr, stopRedis, err := startRedis(ctx, dir)
	if err != nil {
		return err
	}
	defer stopRedis()
	fake := wechattest.NewServer(wechattest.Options{})
	defer fake.Close()

	seq := sequence(cfg)
	distinct := map[string]bool{}
	for _, r := range seq {
		distinct[r.path+" "+r.body] = true
	}
	goVersion, _ := exec.CommandContext(ctx, "go", "version").Output()
	fmt.Printf("%s", goVersion)
	fmt.Printf("command: go run -tags linksbench ./bench/links %s\n", strings.Join(os.Args[1:], " "))
	fmt.Printf("mix: %d requests, %.0f%% of them on %d hot links, the rest new; %d distinct links in the sequence (the least any sidecar can make); %d in flight at once; WeChat answering after %s\n\n",
		cfg.requests, 100*cfg.repeat, cfg.hot, len(distinct), cfg.workers, cfg.latency)
	fmt.Println("| run | sidecar | replicas | links made | per 1 000 requests | upstream calls | errors | Redis faults | leases waited out | took |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	type cell struct {
		which    string
		replicas int
	}
	made := map[cell][]int{}
	for run := 1; run <= cfg.runs; run++ {
		for _, which := range []string{"before", "after"} {
			if bins[which] == "" {
				continue
			}
			for _, n := range []int{1, 3} {
				res, err := measure(ctx, bins[which], fake, redisAddr, n, seq, cfg, run)
				if err != nil {
					return err
				}
				made[cell{which, n}] = append(made[cell{which, n}], res.made)
				fmt.Printf("| %d | %s | %d | %d | %.0f | %d | %d | %d | %d | %s |\n", run, which, n, res.made,
					1000*float64(res.made)/float64(len(seq)), res.calls, res.errors, res.redisFaults, res.leaseTimeouts,
					res.took.Round(10*time.Millisecond))
			}
		}
	}
	fmt.Printf("\nmedians of %d runs, links made per 1 000 link requests:\n\n", cfg.runs)
	fmt.Println("| replicas | before | after |")
	fmt.Println("|---|---|---|")
	for _, n := range []int{1, 3} {
		col := func(which string) string {
			m := made[cell{which, n}]
			if len(m) == 0 {
				return "—"
			}
			slices.Sort(m)
			return fmt.Sprintf("%.0f", 1000*float64(m[len(m)/2])/float64(len(seq)))
		}
		fmt.Printf("| %d | %s | %s |\n", n, col("before"), col("after"))
	}
	return nil
}

// request is one link request of the sequence.
type request struct{ path, body string }

// sequence draws the run's requests: a hot link with probability repeat,
// else a new one.
func sequence(cfg config) []request {
	rng := rand.New(rand.NewPCG(cfg.seed, 19))
	link := func(kind string, i int) request {
		path := linkPaths[i%len(linkPaths)]
		query := kind + "=" + strconv.Itoa(i)
		switch path {
		case "/wxa/generatescheme":
			return request{path, `{"jump_wxa":{"path":"pages/index/index","query":"` + query + `"},"expire_type":1,"expire_interval":7}`}
		case "/wxa/generate_urllink":
			return request{path, `{"path":"pages/index/index","query":"` + query + `","expire_type":1,"expire_interval":7}`}
		}
		return request{path, `{"page_url":"pages/index/index?` + query + `"}`}
	}
	out := make([]request, cfg.requests)
	fresh := 0
	for i := range out {
		if rng.Float64() < cfg.repeat {
			out[i] = link("hot", rng.IntN(cfg.hot))
		} else {
			fresh++
			out[i] = link("new", fresh)
		}
	}
	return out
}

type result struct {
	made, calls, errors int
	// redisFaults are the replicas' Redis operations that timed out,
	// failed or met an open breaker; leaseTimeouts their leases waited
	// out: on a busy machine, what makes a fleet act as lone replicas.
	redisFaults, leaseTimeouts int
	took                       time.Duration
}

// measure starts n replicas of bin (sharing Redis when n > 1), sends seq
// and counts what the fake made. Each run's links are new to WeChat and
// to Redis (a key prefix of its own).
func measure(ctx context.Context, bin string, fake *wechattest.Server, redisAddr string, n int, seq []request, cfg config, run int) (result, error) {
	env := []string{"PATH=" + os.Getenv("PATH"), "WECHAT_APP_ID=" + wechattest.DemoAppID,
		"WECHAT_APP_SECRET=" + wechattest.DemoSecret, "WECHAT_API_URL=" + fake.URL, "LOG_LEVEL=warn",
		// Generous: the limiter must not be what is measured.
		"UPSTREAM_RPS=10000", "UPSTREAM_BURST=10000",
		"UPSTREAM_LIMITS=/wxa/generatescheme=100000/s,/wxa/generate_urllink=100000/s,/wxa/genwxashortlink=100000/s"}
	if n > 1 {
		env = append(env, "REDIS_URL=redis://"+redisAddr+"/0", "FLEET_SIZE="+strconv.Itoa(n),
			fmt.Sprintf("REDIS_KEY_PREFIX=run%d-%s-%d-%d:", run, filepath.Base(bin), n, time.Now().UnixNano()))
	}
	var apis, admins []string
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range n {
		api, err1 := freeAddr()
		admin, err2 := freeAddr()
		if err := errors.Join(err1, err2); err != nil {
			return result{}, err
		}
		cmd := exec.Command(bin)
		cmd.Env = append(slices.Clone(env), "LISTEN_ADDR="+api, "ADMIN_ADDR="+admin)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		cmds = append(cmds, cmd)
		apis = append(apis, api)
		admins = append(admins, admin)
		if err := waitReady(ctx, admin); err != nil {
			return result{}, err
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	// A token on every replica before the run: a token call is no link.
	for _, api := range apis {
		resp, err := client.Get("http://" + api + "/cgi-bin/token?grant_type=client_credential&appid=" +
			wechattest.DemoAppID + "&secret=" + wechattest.DemoSecret)
		if err != nil {
			return result{}, err
		}
		resp.Body.Close()
	}
	// Every run's links differ from the last run's, at the fake too.
	tag := fmt.Sprintf("r%d%s%d", run, filepath.Base(bin), n)
	madeBefore := len(fake.LinksMade(""))
	callsBefore := 0
	for _, p := range linkPaths {
		callsBefore += fake.Calls(p)
	}
	start := time.Now()
	var mu sync.Mutex
	errs := 0
	next := make(chan int)
	var wg sync.WaitGroup
	fake.SetLatency(cfg.latency)
	defer fake.SetLatency(0)
	for range cfg.workers {
		wg.Go(func() {
			for i := range next {
				r := seq[i]
				body := strings.Replace(r.body, "=", "="+tag+"-", 1)
				resp, err := client.Post("http://"+apis[i%n]+r.path, "application/json", strings.NewReader(body))
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					ok = ok && strings.Contains(string(b), `"errcode":0`)
				}
				if !ok {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		})
	}
	for i := range seq {
		select {
		case next <- i:
		case <-ctx.Done():
			close(next)
			wg.Wait()
			return result{}, ctx.Err()
		}
	}
	close(next)
	wg.Wait()
	calls := -callsBefore
	for _, p := range linkPaths {
		calls += fake.Calls(p)
	}
	res := result{made: len(fake.LinksMade("")) - madeBefore, calls: calls, errors: errs, took: time.Since(start)}
	for _, admin := range admins {
		faults, leases := scrapeFaults(client, admin)
		res.redisFaults += faults
		res.leaseTimeouts += leases
	}
	return res, nil
}

// scrapeFaults reads a replica's Redis faults and timed-out leases from
// its /metrics.
func scrapeFaults(client *http.Client, admin string) (faults, leases int) {
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(line[i+1:], 64)
		switch {
		case strings.HasPrefix(line, "wxa_sidecar_redis_requests_total{") && !strings.Contains(line, `result="ok"`) &&
			!strings.Contains(line, `result="miss"`):
			faults += int(v)
		case strings.HasPrefix(line, `wxa_sidecar_fleet_leases_total{result="timed_out"}`):
			leases += int(v)
		}
	}
	return faults, leases
}

func build(ctx context.Context, dir, out string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("links: go build in %s: %w\n%s", dir, err, b)
	}
	return out, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("links: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("links: run it inside the wxa-sidecar module")
	}
	return filepath.Dir(gomod), nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(ctx context.Context, admin string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("links: a sidecar was not ready within 15s")
}

// startRedis runs a redis-server without persistence on a free port
// (redistest.Launch, as the tests and bench/fleet start theirs).
func startRedis(_ context.Context, dir string) (string, func(), error) {
	srv, err := redistest.Launch(dir, redistest.Options{})
	if err != nil {
		return "", nil, fmt.Errorf("links: %w", err)
	}
	return srv.Addr, srv.Stop, nil
}
