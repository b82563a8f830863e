package fleet

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
)

// connectionsReceived is how many connections srv has accepted so far.
func connectionsReceived(t *testing.T, srv *redistest.Server, password string) int {
	t.Helper()
	args := []string{"INFO", "stats"}
	if password != "" {
		args = append([]string{"--no-auth-warning", "-a", password}, args...)
	}
	for line := range strings.SplitSeq(srv.Command(t, args...), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("INFO stats: %q", line)
			}
			return n
		}
	}
	t.Fatal("INFO stats has no total_connections_received")
	return 0
}

// Redis refusing the sidecar's credentials or their rights is Redis down
// for the sidecar: the breaker opens (redis_up 0, the alert), one ERROR
// line names the cause and never the password, and the breaker stops the
// client from dialling a connection per operation.
func TestRefusedCredentialsOpenTheBreaker(t *testing.T) {
	password := "pw-" + rand.Text()
	wrong := "wrong-" + rand.Text()
	tests := []struct {
		name     string
		password string // the server's requirepass
		url      func(srv *redistest.Server) string
		setup    func(t *testing.T, srv *redistest.Server)
		cause    string
	}{
		{name: "a wrong password", password: password, cause: "WRONGPASS",
			url: func(srv *redistest.Server) string { return "redis://:" + wrong + "@" + srv.Addr + "/0" }},
		{name: "no password", password: password, cause: "NOAUTH",
			url: func(srv *redistest.Server) string { return "redis://" + srv.Addr + "/0" }},
		{name: "a user without the commands", cause: "NOPERM",
			setup: func(t *testing.T, srv *redistest.Server) {
				srv.Command(t, "ACL", "SETUSER", "reader", "on", ">"+wrong, "~*", "-@all", "+hello", "+auth", "+client")
			},
			url: func(srv *redistest.Server) string { return "redis://reader:" + wrong + "@" + srv.Addr + "/0" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{Password: tt.password})
			if tt.setup != nil {
				tt.setup(t, srv)
			}
			before := connectionsReceived(t, srv, tt.password)
			rec, logs := &seen{}, &logBuffer{}
			c := newTestClient(t, tt.url(srv), rec, logs)
			for range 50 {
				err := c.Do(Scope(context.Background()), OpL2Get, func(ctx context.Context) error {
					return c.Redis().Get(ctx, "wxa:k").Err()
				})
				if err == nil {
					t.Fatal("GET succeeded with refused credentials")
				}
			}
			if st := c.Status(); st.Up || st.Breaker != "open" {
				t.Errorf("status %+v, want down with the breaker open", st)
			}
			rec.mu.Lock()
			ups := rec.ups
			rec.mu.Unlock()
			if len(ups) != 1 || ups[0] {
				t.Errorf("Up hooks %v, want [false] (redis_up 0)", ups)
			}
			if got := rec.list(); !strings.HasPrefix(got, "l2_get error,l2_get error,l2_get error,l2_get breaker_open") {
				t.Errorf("reported %.120q..., want three errors then the breaker open", got)
			}
			var errorLines []string
			for line := range strings.SplitSeq(logs.String(), "\n") {
				if strings.Contains(line, "level=ERROR") {
					errorLines = append(errorLines, line)
				}
			}
			if len(errorLines) != 1 || !strings.Contains(errorLines[0], tt.cause) {
				t.Errorf("ERROR lines %q, want one naming %s", errorLines, tt.cause)
			}
			for _, secret := range []string{password, wrong} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("a password is in the log:\n%s", logs)
				}
			}
			if n := connectionsReceived(t, srv, tt.password) - before; n > 10 {
				t.Errorf("50 operations opened %d connections, want a few (the breaker skips Redis)", n)
			}
		})
	}
}

// Every connection busy with this replica's own work is its overload, not
// Redis's failure: operations waiting for the pool time out, but the
// breaker stays closed and the shared tier stays up.
func TestAPoolTimeoutDoesNotOpenTheBreaker(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := &seen{}
	c, err := New(Options{URL: srv.URL, Hooks: rec.hooks(), Timeout: 400 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Hold every connection of the pool (go-redis's default size) in a
	// blocking pop for 3 s.
	poolSize := 10 * runtime.GOMAXPROCS(0)
	var holders sync.WaitGroup
	for range poolSize {
		holders.Go(func() { c.Redis().BLPop(context.Background(), 3*time.Second, "wxa:never") })
	}
	t.Cleanup(holders.Wait)
	waitUntil(t, "the pool to be busy", func() bool { return c.Redis().PoolStats().TotalConns >= uint32(poolSize) })
	for i := range 5 {
		err := c.Do(context.Background(), OpL2Get, func(ctx context.Context) error { return c.Redis().Get(ctx, "wxa:k").Err() })
		if err == nil || errors.Is(err, ErrSkipped) {
			t.Fatalf("operation %d with the pool busy: %v, want a pool timeout", i, err)
		}
	}
	if got := rec.list(); got != strings.Repeat("l2_get timeout,", 4)+"l2_get timeout" {
		t.Errorf("reported %q, want five timeouts", got)
	}
	if st := c.Status(); !st.Up || st.Breaker != "closed" {
		t.Errorf("status %+v after five pool timeouts, want up, breaker closed", st)
	}
	if len(rec.ups) != 0 {
		t.Errorf("Up hooks %v, want none", rec.ups)
	}
}
