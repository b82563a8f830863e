package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/internal/testclock"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// newClock is the tests' clock, shared by the manager and the fake WeChat.
func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)) }

type fixture struct {
	fake   *wechattest.Server
	clock  *testclock.Clock
	timers *testclock.Waits
	logs   *wechattest.LogBuffer
	m      *Manager
}

func newFixture(t *testing.T, mode Mode, mutate func(*Options)) *fixture {
	t.Helper()
	return newFixtureWithFake(t, mode, wechattest.Options{}, mutate)
}

// newFixtureWithFake is newFixture against a fake WeChat configured by
// fakeOpts (its clock is always the fixture's).
func newFixtureWithFake(t *testing.T, mode Mode, fakeOpts wechattest.Options, mutate func(*Options)) *fixture {
	t.Helper()
	f := &fixture{clock: newClock(), timers: testclock.NewWaits(), logs: &wechattest.LogBuffer{}}
	fakeOpts.Now = f.clock.Now
	f.fake = wechattest.NewServer(fakeOpts)
	t.Cleanup(f.fake.Close)
	opts := Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret, BaseURL: f.fake.URL, Mode: mode,
		Now: f.clock.Now, After: f.timers.After, Jitter: func(d time.Duration) time.Duration { return d },
		Logger: slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mutate != nil {
		mutate(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

// run starts Run and returns a function that stops it and waits.
func (f *fixture) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.m.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

func TestConcurrentCallersShareOneFetch(t *testing.T) {
	f := newFixture(t, ModeStable, nil)
	var wg sync.WaitGroup
	values := make([]string, 50)
	for i := range values {
		wg.Go(func() {
			tok, err := f.m.Token(context.Background())
			if err != nil {
				t.Error(err)
			}
			values[i] = tok.Value
		})
	}
	wg.Wait()
	if got := f.fake.Calls("/cgi-bin/stable_token"); got != 1 {
		t.Errorf("%d fetches for 50 concurrent callers, want 1", got)
	}
	for _, v := range values {
		if v != values[0] || v == "" {
			t.Fatalf("callers got different tokens")
		}
	}
}

func TestRefreshesBeforeExpiry(t *testing.T) {
	for _, mode := range []Mode{ModeStable, ModeClassic} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, mode, nil)
			path := map[Mode]string{ModeStable: "/cgi-bin/stable_token", ModeClassic: "/cgi-bin/token"}[mode]
			f.run(t)
			first := f.timers.Next(t)
			if first.D != 0 {
				t.Errorf("first wait %v, want an immediate fetch", first.D)
			}
			first.Fire(f.clock.Now())
			wait := f.timers.Next(t)
			old, _ := f.m.Token(context.Background())
			if want := 7200*time.Second - DefaultRefreshMargin; wait.D != want {
				t.Errorf("next refresh in %v, want %v (expiry minus the margin)", wait.D, want)
			}
			f.clock.Advance(wait.D)
			wait.Fire(f.clock.Now())
			f.timers.Next(t) // the refresh is done
			calls := f.fake.Calls(path)
			tok, err := f.m.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.Value == old.Value {
				t.Error("the token was not replaced before expiry")
			}
			if !f.clock.Now().Before(old.Expiry) {
				t.Error("the refresh came after expiry")
			}
			if got := f.fake.Calls(path); got != calls || calls != 2 {
				t.Errorf("fetches %d then %d, want 2 and no fetch on the request path", calls, got)
			}
		})
	}
}

// sameTokenServer always answers the same token with little life left, as
// a stable token before its rollover would.
func sameTokenServer(t *testing.T, expiresIn int, calls *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		fmt.Fprintf(w, `{"access_token":"SAME-TOKEN-0123456789","expires_in":%d}`, expiresIn)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSameTokenInsideMarginDoesNotLoop(t *testing.T) {
	var calls atomic.Int64
	f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL = sameTokenServer(t, 60, &calls) })
	f.run(t)
	for i := range 5 {
		w := f.timers.Next(t)
		if i > 0 && w.D < 5*time.Second {
			t.Fatalf("wait %d is %v: a token inside the margin makes Run spin", i, w.D)
		}
		f.clock.Advance(w.D)
		w.Fire(f.clock.Now())
	}
	f.timers.Next(t)
	if got := calls.Load(); got != 5 {
		t.Errorf("%d fetches for 5 timer firings, want 5", got)
	}
}

func TestInvalidateRefreshesOnceForConcurrentCallers(t *testing.T) {
	f := newFixture(t, ModeStable, nil)
	old, err := f.m.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.fake.RevokeTokens()
	before := f.fake.Calls("/cgi-bin/stable_token")
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		wg.Go(func() {
			tok, err := f.m.Invalidate(context.Background(), old.Value)
			if err != nil {
				t.Error(err)
			}
			got[i] = tok.Value
		})
	}
	wg.Wait()
	if n := f.fake.Calls("/cgi-bin/stable_token") - before; n != 1 {
		t.Errorf("%d fetches for 20 callers on one dead token, want 1", n)
	}
	for _, v := range got {
		if v == old.Value || v != got[0] {
			t.Fatal("callers did not all get the one new token")
		}
	}
	// A caller late with the old token gets the current one, no fetch.
	if tok, _ := f.m.Invalidate(context.Background(), old.Value); tok.Value != got[0] {
		t.Error("a stale Invalidate replaced the current token")
	}
	if n := f.fake.Calls("/cgi-bin/stable_token") - before; n != 1 {
		t.Errorf("an Invalidate with an old token fetched")
	}
}

// forceServer hands out one stable token until force_refresh, like WeChat
// when a token it calls invalid is still the current one.
type forceServer struct {
	mu      sync.Mutex
	current int
	forced  int
	normal  int
}

func (s *forceServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ForceRefresh bool `json:"force_refresh"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.ForceRefresh {
		s.forced++
		s.current++
	} else {
		s.normal++
	}
	fmt.Fprintf(w, `{"access_token":"TOKEN-%04d-abcdefgh","expires_in":7200}`, s.current)
}

func TestForceRefreshOnlyWhenNormalFetchReturnsTheDeadToken(t *testing.T) {
	fs := &forceServer{}
	srv := httptest.NewServer(fs)
	defer srv.Close()
	f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL = srv.URL })
	tok, _ := f.m.Token(context.Background())
	for i := range wechat.ForceRefreshesPerDay {
		next, err := f.m.Invalidate(context.Background(), tok.Value)
		if err != nil || next.Value == tok.Value {
			t.Fatalf("force refresh %d: %v", i+1, err)
		}
		// Too soon after the last one: refused, and WeChat not asked.
		if _, err := f.m.Invalidate(context.Background(), next.Value); err == nil {
			t.Fatalf("a second force refresh within 30s was allowed")
		}
		tok = next
		f.clock.Advance(wechat.ForceRefreshSpacing + time.Second)
	}
	if _, err := f.m.Invalidate(context.Background(), tok.Value); err == nil || !strings.Contains(err.Error(), "20 force refreshes") {
		t.Errorf("force refresh 21 within a day: %v, want refused", err)
	}
	if fs.forced != wechat.ForceRefreshesPerDay {
		t.Errorf("WeChat saw %d force refreshes, want %d", fs.forced, wechat.ForceRefreshesPerDay)
	}
	f.clock.Advance(24 * time.Hour)
	if _, err := f.m.Invalidate(context.Background(), tok.Value); err != nil {
		t.Errorf("a day later: %v, want allowed again", err)
	}
	if s := f.m.Status(); s.ForceRefreshesToday != 1 {
		t.Errorf("Status.ForceRefreshesToday %d, want 1", s.ForceRefreshesToday)
	}
}

func TestFetchFailureKeepsValidTokenAndBacksOff(t *testing.T) {
	f := newFixture(t, ModeStable, nil)
	var fetchErrs atomic.Int64
	f.m.opts.OnFetch = func(err error) {
		if err != nil {
			fetchErrs.Add(1)
		}
	}
	f.run(t)
	w := f.timers.Next(t)
	w.Fire(f.clock.Now())
	w = f.timers.Next(t)
	good, _ := f.m.Token(context.Background())
	f.fake.FailNext("/cgi-bin/stable_token", 100, wechattest.FaultHTTP500)
	f.clock.Advance(w.D)
	var waits []time.Duration
	for range 4 {
		w.Fire(f.clock.Now())
		w = f.timers.Next(t)
		waits = append(waits, w.D)
		f.clock.Advance(w.D)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("backoff %v, want %v", waits, want)
		}
	}
	if got := fetchErrs.Load(); got != 4 {
		t.Errorf("%d failed fetches for 4 firings, want 4", got)
	}
	tok, err := f.m.Token(context.Background())
	if err != nil || tok.Value != good.Value {
		t.Errorf("during failures Token() = %v, %v; want the still-valid token", tok.Value, err)
	}
	if got := f.fake.Calls("/cgi-bin/stable_token"); got != 5 {
		t.Errorf("%d fetches, want 5 (requests never fetch while a token is valid)", got)
	}
	if s := f.m.Status(); s.LastError == "" || s.FetchErrors != 4 {
		t.Errorf("Status %+v, want the last error and 4 failures", s)
	}
}

func TestBadSecretAtStartIsReportedAndRetried(t *testing.T) {
	f := newFixture(t, ModeStable, func(o *Options) { o.Secret = "wrong-secret-value" })
	_, err := f.m.Token(context.Background())
	var ae *wechat.Error
	if !errors.As(err, &ae) || ae.Code != wechat.InvalidSecret {
		t.Fatalf("Token() error %v, want WeChat's 40125", err)
	}
	if ae.Status != 0 {
		// A status would make it the answer to the caller's own call,
		// which a replica may hand to another's callers.
		t.Errorf("the errcode of a token fetch has Status %d, want 0", ae.Status)
	}
	f.run(t)
	for range 3 {
		w := f.timers.Next(t)
		f.clock.Advance(w.D)
		w.Fire(f.clock.Now())
	}
	f.timers.Next(t) // still running
	logs := f.logs.String()
	if !strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, "secret is wrong") {
		t.Errorf("a bad secret was not reported loudly: %s", logs)
	}
	if strings.Contains(logs, "wrong-secret-value") {
		t.Error("logs carry the secret")
	}
}

func TestOwnsTokensItHandedOutUntilExpiry(t *testing.T) {
	f := newFixture(t, ModeClassic, nil)
	first, _ := f.m.Token(context.Background())
	second, _ := f.m.Invalidate(context.Background(), first.Value)
	if !f.m.Owns(first.Value) || !f.m.Owns(second.Value) {
		t.Error("a handed-out token is not recognized")
	}
	if f.m.Owns("someone-elses-token") {
		t.Error("a foreign token is claimed")
	}
	f.clock.Advance(7201 * time.Second)
	if f.m.Owns(first.Value) {
		t.Error("an expired token is still claimed")
	}
}

func TestRedaction(t *testing.T) {
	tok := strings.Repeat("T", 100)
	tests := []struct{ in, want string }{
		{"https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3CR3T",
			"https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=REDACTED"},
		{"/wxa/x?access_token=" + tok + "&a=1", "/wxa/x?access_token=TTTTTT…&a=1"},
		{"js_code=abc&code=def", "js_code=REDACTED&code=REDACTED"},
		{`Post "http://h/sns/jscode2session?js_code=abc": EOF`, `Post "http://h/sns/jscode2session?js_code=REDACTED": EOF`},
		{"errcode=40001", "errcode=40001"},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFetchErrorsNeverCarryTheSecret(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler())
	dead := ln.URL
	ln.Close() // connection refused from now on
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer slow.Close()
	for _, base := range []string{dead, slow.URL} {
		var logs bytes.Buffer
		m, _ := New(Options{AppID: "wx1", Secret: "VERY-SECRET-VALUE", BaseURL: base, Mode: ModeClassic,
			Client: &http.Client{Timeout: 100 * time.Millisecond}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		_, err := m.Token(context.Background())
		if err == nil {
			t.Fatal("want an error")
		}
		if strings.Contains(err.Error(), "VERY-SECRET-VALUE") || strings.Contains(logs.String(), "VERY-SECRET-VALUE") {
			t.Errorf("the secret leaked: error %q logs %s", err, logs.String())
		}
		var ue *url.Error
		if base == slow.URL && (!errors.As(err, &ue) || !ue.Timeout()) {
			t.Errorf("a timeout lost its type: %v", err)
		}
		if s := m.Status(); strings.Contains(s.LastError, "VERY-SECRET-VALUE") {
			t.Error("Status carries the secret")
		}
	}
}

func TestStatusNeverShowsTheToken(t *testing.T) {
	f := newFixture(t, ModeStable, nil)
	tok, _ := f.m.Token(context.Background())
	b, _ := json.Marshal(f.m.Status())
	if strings.Contains(string(b), tok.Value) {
		t.Errorf("status %s carries the token", b)
	}
	if !strings.Contains(string(b), Prefix(tok.Value)) {
		t.Errorf("status %s lacks the token prefix", b)
	}
}

// One failed fetch between background refreshes must not keep a token
// WeChat called dead in service: a later Invalidate fetches again.
func TestAFailedInvalidateIsRetriedAfterABackoff(t *testing.T) {
	f := newFixture(t, ModeClassic, nil)
	// The background refresh fetches and schedules the next refresh about
	// two hours ahead.
	f.run(t)
	f.timers.Next(t).Fire(f.clock.Now())
	f.timers.Next(t)
	tok, err := f.m.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.fake.FailNext("/cgi-bin/token", 1, wechattest.FaultHTTP500)
	if _, err := f.m.Invalidate(context.Background(), tok.Value); err == nil {
		t.Fatal("Invalidate with WeChat failing: no error")
	}
	f.clock.Advance(5 * time.Minute)
	fresh, err := f.m.Invalidate(context.Background(), tok.Value)
	if err != nil || fresh.Value == tok.Value {
		t.Fatalf("Invalidate 5 minutes later: %v (same token: %v), want a fresh token", err, fresh.Value == tok.Value)
	}
}

func TestValidValueIsWeChatsCharacterSet(t *testing.T) {
	for v, want := range map[string]bool{
		"78_8Hh3abc-DEF_ghi0123": true, strings.Repeat("A", 512): true, "a.b~c": true,
		"": false, strings.Repeat("A", 513): false, "FORGED&touser=attacker": false, "a b": false,
		"a=b": false, "a%26b": false, "a#b": false, "a;b": false, "a+b": false, "tok\n": false, "токен": false,
	} {
		if got := ValidValue(v); got != want {
			t.Errorf("ValidValue(%.40q) = %v, want %v", v, got, want)
		}
	}
}

// A token answer whose access_token WeChat would never issue is a failed
// fetch: the value is neither used nor echoed.
func TestFetchRefusesATokenOutsideWeChatsCharacters(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"access_token":"EVIL&touser=attacker","expires_in":7200}`)
	}))
	t.Cleanup(srv.Close)
	f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL = srv.URL })
	tok, err := f.m.Token(context.Background())
	if err == nil || tok.Value != "" {
		t.Fatalf("Token = %q, %v; want a failed fetch", tok.Value, err)
	}
	if strings.Contains(err.Error(), "EVIL") || strings.Contains(err.Error(), "touser") {
		t.Errorf("the error echoes the value: %v", err)
	}
}
