//go:build fleetbench

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

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
