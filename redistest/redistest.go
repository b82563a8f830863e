// Package redistest starts a real redis-server for tests, as wechattest is
// the fake WeChat: on a free loopback port, without persistence, stopped by
// PID when the test ends. A machine without redis-server skips the test,
// except under CI=true, where it fails (.ci/run installs it).
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one running redis-server.
type Server struct {
	// Addr is host:port on 127.0.0.1.
	Addr string
	// URL is redis://[:password@]Addr/0.
	URL string

	cmd  *exec.Cmd
	args []string
	port int
}

// Options configures a server.
type Options struct {
	// Password, when set, is required (requirepass).
	Password string
	// Args are more redis-server arguments (e.g. TLS or cluster ones).
	Args []string
	// Port, when not 0, is the port to listen on (to restart on the same).
	Port int
}

// Binary returns the path of redis-server, skipping t without it (failing
// it under CI=true).
func Binary(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; .ci/run installs redis-server", name)
		}
		t.Skipf("%s not installed (apt-get install redis-server)", name)
	}
	return bin
}

// FreePort returns a loopback port nothing listens on.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start runs a redis-server until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Binary(t, "redis-server") // skips (or fails under CI) without one
	s, err := Launch(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Launch runs a redis-server outside a test (a benchmark, a tool), its
// files in dir, and waits until it listens. The caller stops it with Stop;
// on Linux it also dies with the process that launched it.
func Launch(dir string, o Options) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redistest: redis-server is not installed (apt-get install redis-server): %w", err)
	}
	port := o.Port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), port: port}
	s.args = []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--loglevel", "warning"}
	if o.Password != "" {
		s.args = append(s.args, "--requirepass", o.Password)
		s.URL = "redis://:" + o.Password + "@" + s.Addr + "/0"
	} else {
		s.URL = "redis://" + s.Addr + "/0"
	}
	s.args = append(s.args, o.Args...)
	if err := s.start(bin); err != nil {
		return nil, err
	}
	if !waitForPort(s.Addr, 10*time.Second) {
		s.Stop()
		return nil, fmt.Errorf("redistest: redis-server did not listen on %s", s.Addr)
	}
	return s, nil
}

// start runs bin with the server's arguments.
func (s *Server) start(bin string) error {
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.SysProcAttr = dieWithParent()
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return fmt.Errorf("redis-server: %w", err)
	}
	return nil
}

// Stop kills the server by PID and waits for it; safe to call twice.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the same server again on the same port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(Binary(t, "redis-server")); err != nil {
		t.Fatal(err)
	}
	if !waitForPort(s.Addr, 10*time.Second) {
		t.Fatalf("redis-server did not listen on %s again", s.Addr)
	}
}

// Pause stops the process without closing its connections (SIGSTOP): a
// Redis that accepts and never answers. Resume undoes it.
func (s *Server) Pause()  { s.cmd.Process.Signal(syscall.SIGSTOP) }
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// Command runs one command through redis-cli and returns its output.
func (s *Server) Command(t testing.TB, args ...string) string {
	t.Helper()
	cli := Binary(t, "redis-cli")
	host, port, _ := net.SplitHostPort(s.Addr)
	out, err := exec.Command(cli, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Silent is a TCP listener that accepts connections and never answers: a
// Redis that hangs, as a redis:// URL. It closes when the test ends.
func Silent(t testing.TB) string {
	t.Helper()
	return "redis://" + SilentAddr(t) + "/0"
}

// SilentAddr is Silent's listener as host:port, for any protocol that
// should find a server that hangs (an S3 endpoint, say).
func SilentAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { bufio.NewReader(c).WriteTo(discard{}) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func waitForPort(addr string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
