package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// freeAddr returns a loopback address nothing listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("soak: a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// process is a child of the soak, stopped by its PID.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // its exit, once done
}

func startProcess(name string, args, env []string, logPath string) (*process, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	// Should the soak die without stopping it, the child goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("soak: %w", err)
		}
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close() // the child has its own descriptor
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("soak: start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) signal(s syscall.Signal) { p.cmd.Process.Signal(s) }

// wait waits for the exit at most d; false if it is still running.
func (p *process) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// kill SIGKILLs the process (after SIGCONT, should it be stopped) and
// waits for it.
func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.signal(syscall.SIGKILL)
	p.signal(syscall.SIGCONT)
	<-p.done
}

// redisServer is the fleet's Redis: started again on the same port, empty,
// after a kill.
type redisServer struct {
	addr, url string
	args      []string
	logPath   string
	mu        sync.Mutex
	p         *process
}

func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	s := &redisServer{addr: addr, url: "redis://" + addr + "/0", logPath: filepath.Join(dir, "redis.log"),
		args: []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--loglevel", "warning"}}
	return s, s.start(ctx)
}

func (s *redisServer) start(ctx context.Context) error {
	p, err := startProcess("redis-server", s.args, []string{"PATH=" + os.Getenv("PATH")}, s.logPath)
	if err != nil {
		return fmt.Errorf("%w (Debian: apt-get install redis-server)", err)
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if rdb.Ping(ctx).Err() == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("soak: redis-server did not answer on %s", s.addr)
}

func (s *redisServer) proc() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

func (s *redisServer) stop() {
	if p := s.proc(); p != nil {
		p.kill()
	}
}

// replica is one slot of the fleet: a process of the sidecar on fixed
// ports, started again on the same ones after a fault stops it.
type replica struct {
	slot           int
	api, admin, qr string
	env            []string
	bin, logPath   string
	routed         atomic.Bool // the load sends it requests
	stopping       atomic.Bool // a SIGTERM or SIGKILL is on its way or done
	mu             sync.Mutex
	p              *process
	inc            int // incarnation: 0 for the first process, then 1, 2...
}

func newReplica(slot int, bin, dir string, env []string) (*replica, error) {
	r := &replica{slot: slot, bin: bin, logPath: filepath.Join(dir, "replica-"+strconv.Itoa(slot)+".log")}
	var err error
	for _, a := range []*string{&r.api, &r.admin, &r.qr} {
		if *a, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	r.env = append(append([]string{"PATH=" + os.Getenv("PATH")}, env...),
		"LISTEN_ADDR="+r.api, "ADMIN_ADDR="+r.admin, "QRCODE_ADDR="+r.qr)
	return r, nil
}

// start runs a new incarnation and waits until it is ready (within 30 s).
func (r *replica) start(ctx context.Context, upstreamURL string) error {
	p, err := startProcess(r.bin, nil, append(append([]string(nil), r.env...), "WECHAT_API_URL="+upstreamURL), r.logPath)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.p = p
	r.mu.Unlock()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-p.done:
			return fmt.Errorf("soak: replica %d exited at start: %v; its log ends:\n%s", r.slot, p.err, tail(r.logPath))
		default:
		}
		resp, err := client.Get("http://" + r.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				r.stopping.Store(false)
				r.routed.Store(true)
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("soak: replica %d not ready within 30s; its log ends:\n%s", r.slot, tail(r.logPath))
}

// tail is the last 2 KiB of a log.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	return string(b[max(0, len(b)-2048):])
}

func (r *replica) proc() *process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

// alive reports whether the current process is running.
func (r *replica) alive() bool {
	p := r.proc()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// procStats reads a process's resident set and open descriptors from /proc.
func procStats(pid int) (rssBytes int64, fds int, err error) {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rssBytes = kb * 1024
		}
	}
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return rssBytes, 0, err
	}
	return rssBytes, len(entries), nil
}
