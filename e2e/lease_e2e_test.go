package e2e

// End-to-end tests of the fleet's leases, shutdown and token coordination:
// real processes of the binary, a real redis-server and the fake WeChat. A
// lease never outlives its holder's fetch by more than a few seconds (a
// Redis stall, a SIGTERM), SIGTERM ends the process in time whatever a
// token fill waits for, and a stable-mode replica that finds the fleet's
// force_refresh taken adopts the token it brings instead of failing its
// callers with 40001. The bounds in seconds are liveness bounds against a
// defect of 20-30 s, not performance figures.

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// defaultLease is the code lease at the default UPSTREAM_TIMEOUT (10s) and
// UPSTREAM_MAX_WAIT (2s): what a waiter would sit out if a lease outlived
// its holder's fetch, the defect these tests bound.
const defaultLease = 29 * time.Second

// askAsync asks p for scene's code from a goroutine and answers when it
// comes, with how long it took.
func (rig *fleetRig) askAsync(p *sidecarProcess, scene string) <-chan timedAnswer {
	ch := make(chan timedAnswer, 1)
	go func() {
		start := time.Now()
		a := rig.ask(p, scene)
		ch <- timedAnswer{a, time.Since(start)}
	}()
	return ch
}

type timedAnswer struct {
	codeAnswer
	took time.Duration
}

// waitForCalls waits up to 10 s until fake has seen n calls on path.
func waitForCalls(t *testing.T, fake *wechattest.Server, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for fake.Calls(path) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d calls within 10 s, want %d", path, fake.Calls(path), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exitWithin sends SIGTERM to p and reports how long it took to exit, or
// fails the test when it has not after limit (then it is killed).
func exitWithin(t *testing.T, p *sidecarProcess, limit time.Duration) time.Duration {
	t.Helper()
	exited := make(chan error, 1)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		took := time.Since(start)
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
		return took
	case <-time.After(limit):
		t.Errorf("still running %v after SIGTERM", limit)
		p.cmd.Process.Kill()
		<-exited
		return time.Since(start)
	}
}

// A replica fetching a code when Redis stops answering can neither store
// the image nor release its lease. Once Redis answers again it does both,
// so a second replica asking the same code gets it from Redis at once
// instead of waiting out the lease and calling WeChat again.
func TestLeaseIsReleasedWhenRedisAnswersAgain(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 2, rs.URL)
	rig.warmTokens(t)
	a, b := rig.replicas[0], rig.replicas[1]

	fake.SetLatency(3 * time.Second)
	first := rig.askAsync(a, "stall")
	waitForCalls(t, fake, fleetCodePath, 1)
	fake.SetLatency(0)
	rs.Pause()
	paused := time.Now()
	// Other callers of the holder's replica meet the stall: its breaker
	// opens, and from then on it skips Redis (a stalled Redis would
	// otherwise run the commands it buffered once it resumes).
	for i := range 3 {
		if got := rig.ask(a, fmt.Sprintf("stall-other-%d", i)); !got.image() {
			t.Fatalf("another code during the stall: %s", got)
		}
	}
	if s, _ := fleetStatus(t, a); s.Breaker == "closed" {
		t.Fatalf("the holder's breaker is %q during the stall, want open", s.Breaker)
	}
	time.Sleep(4*time.Second - time.Since(paused)) // the fetch ends meanwhile: no L2, no release
	rs.Resume()
	resumed := time.Now()

	got := <-first
	if !got.image() {
		t.Fatalf("the holder's caller: %s", got)
	}
	t.Logf("the holder's caller answered in %v, %v after SIGCONT", got.took.Round(10*time.Millisecond), time.Since(resumed).Round(10*time.Millisecond))
	second := <-rig.askAsync(b, "stall")
	if !second.image() {
		t.Fatalf("the second replica: %s", second)
	}
	t.Logf("second replica answered %v after SIGCONT (Cache-Status %q)", time.Since(resumed).Round(10*time.Millisecond), second.cacheStatus)
	if d := time.Since(resumed); d > 10*time.Second {
		t.Errorf("the second replica answered %v after Redis came back, want within 10 s (the lease is %v)", d.Round(time.Second), defaultLease)
	}
	if n := fake.Calls(fleetCodePath); n != 1+3 {
		t.Errorf("WeChat was called %d times for the code, want 1 (the holder's image from Redis)", n-3)
	}
}

// A classic-mode replica whose token fill waits for a lease another
// replica holds (and never gives back) still exits within SHUTDOWN_DELAY +
// SHUTDOWN_TIMEOUT + 1 s of SIGTERM.
func TestSIGTERMEndsAStuckTokenFillInTime(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rs.Command(t, "SET", "wxa:{"+wechattest.DemoAppID+"}:token-lease", "another-replica", "PX", "120000")
	p := startSidecar(t, []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"WECHAT_API_URL=" + fake.URL, "REDIS_URL=" + rs.URL, "TOKEN_MODE=classic",
		"SHUTDOWN_DELAY=500ms", "SHUTDOWN_TIMEOUT=2s",
		// A busy machine must not turn the wait into a store fault.
		"REDIS_TIMEOUT=2s"})
	// A caller waits on the fill too.
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.api+"/cgi-bin/getcallbackip", nil)
	caller := doAsync(req)
	time.Sleep(500 * time.Millisecond)
	if n := fake.Calls("/cgi-bin/token"); n != 0 {
		t.Fatalf("the replica fetched a token (%d calls) while another held the lease", n)
	}
	const limit = 500*time.Millisecond + 2*time.Second + time.Second
	took := exitWithin(t, p, 40*time.Second)
	t.Logf("exited %v after SIGTERM", took.Round(10*time.Millisecond))
	if took > limit {
		t.Errorf("exited %v after SIGTERM, want within SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + 1 s = %v", took.Round(10*time.Millisecond), limit)
	}
	<-caller
}

// A replica SIGTERMed while it fetches a code (5 s at WeChat, over its
// SHUTDOWN_TIMEOUT of 3 s) gives its lease back before it exits: another
// replica asking the same code fetches it itself without waiting out the
// lease.
func TestSIGTERMDuringAFetchGivesTheLeaseBack(t *testing.T) {
	fake := newFleetFake(t, wechattest.Options{})
	rs := redistest.Start(t, redistest.Options{})
	rig := startFleet(t, fake, 2, rs.URL, "SHUTDOWN_DELAY=0s", "SHUTDOWN_TIMEOUT=3s")
	rig.warmTokens(t)
	a, b := rig.replicas[0], rig.replicas[1]

	fake.SetLatency(5 * time.Second)
	first := rig.askAsync(a, "sigterm")
	waitForCalls(t, fake, fleetCodePath, 1)
	fake.SetLatency(0)
	start := time.Now()
	second := rig.askAsync(b, "sigterm")
	const limit = 3*time.Second + time.Second
	if took := exitWithin(t, a, 40*time.Second); took > limit {
		t.Errorf("the holder exited %v after SIGTERM, want within %v", took.Round(10*time.Millisecond), limit)
	}
	<-first
	got := <-second
	if !got.image() {
		t.Fatalf("the other replica: %s", got)
	}
	t.Logf("the other replica answered %v after the holder's SIGTERM", got.took.Round(10*time.Millisecond))
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the other replica answered %v after the holder's SIGTERM, want within 10 s (the lease is %v)", d.Round(time.Second), defaultLease)
	}
}

// Stable mode, WeChat handing out a token it calls dead until someone
// forces a refresh: 30 new codes at once over 3 replicas. One replica gets
// the fleet's force_refresh; the others wait for its token and adopt it, so
// no caller sees 40001. Ten runs, each with a fresh fake and Redis.
func TestStableReplicasAdoptTheForcedTokenInsteadOf40001(t *testing.T) {
	if testing.Short() {
		t.Skip("10 fleets of 3 replicas: skipped under -short")
	}
	const runs, codes = 10, 30
	for run := range runs {
		fake := newFleetFake(t, wechattest.Options{StaleStableToken: true})
		rs := redistest.Start(t, redistest.Options{})
		rig := startFleet(t, fake, 3, rs.URL)
		rig.warmTokens(t)
		fake.RevokeTokens()
		scenes := make([]string, codes)
		for i := range scenes {
			scenes[i] = fmt.Sprintf("dead-%d-%d", run, i)
		}
		answers, _ := rig.askAllAtOnce(scenes)
		var bad []string
		for i, a := range answers {
			if !a.image() {
				bad = append(bad, fmt.Sprintf("%s from replica %d: %s", scenes[i], i%3, a))
			}
		}
		if len(bad) > 0 {
			t.Errorf("run %d: %d of %d callers got no image:\n%s", run+1, len(bad), codes, strings.Join(bad, "\n"))
		}
		for _, p := range rig.replicas {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		rs.Stop()
		fake.Close()
	}
}
