// Package s3test starts a real S3-compatible server for tests, as
// redistest starts redis-server: versitygw (Apache-2.0) serving a temporary
// directory on a free loopback port, stopped by PID when the test ends. A
// machine without versitygw skips the test, except under CI=true, where it
// fails (.ci/run installs it:
// go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
package s3test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The root credentials every server is started with.
const (
	AccessKey = "wxa-test-access"
	SecretKey = "wxa-test-secret-key-0123456789"
)

// Server is one running versitygw.
type Server struct {
	// Endpoint is http://127.0.0.1:PORT, for STORE_ENDPOINT.
	Endpoint string
	// Addr is 127.0.0.1:PORT.
	Addr string
	// Dir is the directory it serves, one subdirectory per bucket.
	Dir string

	bin string
	log string
	mu  sync.Mutex
	cmd *exec.Cmd
}

// Binary returns the path of versitygw: on PATH or in $(go env GOPATH)/bin,
// skipping t without it (failing it under CI=true).
func Binary(t testing.TB) string {
	t.Helper()
	if bin, err := exec.LookPath("versitygw"); err == nil {
		return bin
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	bin := filepath.Join(gopath, "bin", "versitygw")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("versitygw is not installed; .ci/run installs it (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
	}
	t.Skip("versitygw not installed (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
	return ""
}

// Start starts a server on a free port serving a new temporary directory.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{bin: Binary(t), Dir: t.TempDir(), log: filepath.Join(t.TempDir(), "versitygw.log")}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	ln.Close()
	s.Endpoint = "http://" + s.Addr
	t.Cleanup(s.Stop)
	s.Restart(t)
	return s
}

// Restart starts the server again on the same port and directory (after
// Stop), and waits until it answers.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	logFile, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(s.bin, "--port", s.Addr, "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log)
			t.Fatalf("versitygw on %s did not answer: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (by its PID) and waits for it to exit; the
// directory stays, for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// Client is a minio-go client of the server with the root credentials.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MakeBucket creates bucket.
func (s *Server) MakeBucket(t testing.TB, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", bucket, err)
	}
}

// CredentialFiles writes the access key and secret key to two files, for
// STORE_ACCESS_KEY_FILE and STORE_SECRET_KEY_FILE, and returns their paths.
func CredentialFiles(t testing.TB) (accessKeyFile, secretKeyFile string) {
	t.Helper()
	dir := t.TempDir()
	accessKeyFile, secretKeyFile = filepath.Join(dir, "access-key"), filepath.Join(dir, "secret-key")
	for f, v := range map[string]string{accessKeyFile: AccessKey + "\n", secretKeyFile: SecretKey + "\n"} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return accessKeyFile, secretKeyFile
}

// Port is the server's port.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}
