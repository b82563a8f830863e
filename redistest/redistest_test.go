package redistest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// ping sends PING over a plain connection and returns the first line of
// the answer.
func ping(t *testing.T, addr string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// Launch starts a server without a test to clean up after it: it answers
// until Stop, and Stop leaves nothing listening.
func TestLaunchAnswersUntilStop(t *testing.T) {
	Binary(t, "redis-server")
	s, err := Launch(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if got, err := ping(t, s.Addr); err != nil || got != "+PONG" {
		t.Fatalf("PING answered %q, %v; want +PONG", got, err)
	}
	if !strings.HasPrefix(s.URL, "redis://127.0.0.1:") {
		t.Errorf("URL = %q, want redis://127.0.0.1:PORT/0", s.URL)
	}
	s.Stop()
	if _, err := ping(t, s.Addr); err == nil {
		t.Error("the server still answers after Stop")
	}
	s.Stop() // a second Stop is a no-op
}

// Start's server needs a password when asked, and Restart brings it back
// on the same port.
func TestStartWithPasswordAndRestart(t *testing.T) {
	s := Start(t, Options{Password: "sesame"})
	if got, _ := ping(t, s.Addr); !strings.HasPrefix(got, "-NOAUTH") {
		t.Errorf("PING without the password answered %q, want -NOAUTH", got)
	}
	if !strings.HasPrefix(s.URL, "redis://:sesame@127.0.0.1:") {
		t.Errorf("URL = %q, want the password in it", s.URL)
	}
	s.Restart(t)
	if got, _ := ping(t, s.Addr); !strings.HasPrefix(got, "-NOAUTH") {
		t.Errorf("after Restart, PING answered %q, want -NOAUTH", got)
	}
}
