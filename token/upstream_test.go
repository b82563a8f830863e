package token

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// evilHost stands where a hijacked DNS name or egress proxy would send a
// token fetch: it records every request and would hand out a token of its
// own, so a manager that followed the redirect would adopt it.
type evilHost struct {
	srv      *httptest.Server
	mu       sync.Mutex
	requests []string // method, URL and Referer of each request received
}

func newEvilHost(t *testing.T) *evilHost {
	e := &evilHost{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.requests = append(e.requests, r.Method+" "+r.URL.String()+" Referer="+r.Referer())
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"EVIL-TOKEN-0123456789abcdef","expires_in":7200}`))
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *evilHost) received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.requests...)
}

func TestTokenFetchNeverFollowsARedirect(t *testing.T) {
	paths := map[Mode]string{ModeStable: "/cgi-bin/stable_token", ModeClassic: "/cgi-bin/token"}
	// main passes a client whose CheckRedirect is nil (follow up to 10);
	// the manager must not follow whatever client it is given.
	clients := map[string]func() *http.Client{
		"default client": func() *http.Client { return nil },
		"main's client":  func() *http.Client { return &http.Client{Timeout: 10 * time.Second} },
	}
	for _, mode := range []Mode{ModeStable, ModeClassic} {
		for clientName, newClient := range clients {
			t.Run(string(mode)+"/"+clientName, func(t *testing.T) {
				evil := newEvilHost(t)
				evilURL, _ := url.Parse(evil.srv.URL)
				given := newClient()
				f := newFixtureWithFake(t, mode, wechattest.Options{TokenRedirect: evil.srv.URL},
					func(o *Options) { o.Client = given })

				tok, err := f.m.Token(context.Background())

				if got := evil.received(); len(got) != 0 {
					t.Errorf("the redirect target received %d requests, want none: %q", len(got), got)
				}
				if err == nil {
					t.Fatalf("Token() = %q, want a failed fetch", Prefix(tok.Value))
				}
				var re *RedirectError
				if !errors.As(err, &re) || re.Status != http.StatusTemporaryRedirect || re.LocationHost != evilURL.Host {
					t.Errorf("error %v, want a RedirectError with status 307 and host %s", err, evilURL.Host)
				}
				if s := f.m.Status(); s.HasToken || s.TokenPrefix != "" || s.FetchErrors != 1 {
					t.Errorf("Status %+v, want no token adopted and one failed fetch", s)
				}
				if got := f.fake.Calls(paths[mode]); got != 1 {
					t.Errorf("WeChat saw %d fetches, want 1", got)
				}
				logs := f.logs.String()
				for _, want := range []string{"307", evilURL.Host} {
					if !strings.Contains(logs, want) {
						t.Errorf("logs lack %q: %s", want, logs)
					}
				}
				for _, leak := range []string{wechattest.DemoSecret, "/cgi-bin/", "EVIL-TOKEN"} {
					if strings.Contains(logs, leak) || strings.Contains(err.Error(), leak) {
						t.Errorf("logs or error carry %q (the secret or more of the Location than its host): %s", leak, logs)
					}
				}
				if given != nil && given.CheckRedirect != nil {
					t.Error("New changed the caller's client instead of a copy")
				}
			})
		}
	}
}

func TestHugeExpiresInIsClampedTo7200s(t *testing.T) {
	for _, mode := range []Mode{ModeStable, ModeClassic} {
		t.Run(string(mode), func(t *testing.T) {
			path := map[Mode]string{ModeStable: "/cgi-bin/stable_token", ModeClassic: "/cgi-bin/token"}[mode]
			// 9 300 000 000 s times time.Second overflows int64 nanoseconds.
			f := newFixtureWithFake(t, mode, wechattest.Options{TokenExpiresIn: 9300000000}, nil)
			f.run(t)
			first := f.timers.Next(t)
			first.Fire(f.clock.Now())
			wait := f.timers.Next(t)

			tok, err := f.m.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if want := f.clock.Now().Add(7200 * time.Second); !tok.Expiry.Equal(want) {
				t.Errorf("Expiry %v, want %v (now + 7200s)", tok.Expiry, want)
			}
			if want := 7200*time.Second - DefaultRefreshMargin; wait.D != want {
				t.Errorf("next background refresh in %v, want %v", wait.D, want)
			}
			f.clock.Advance(7200*time.Second - DefaultRefreshMargin - time.Second)
			for range 20 {
				again, err := f.m.Token(context.Background())
				if err != nil || again.Value != tok.Value {
					t.Fatalf("Token() = %q, %v; want the same token", Prefix(again.Value), err)
				}
			}
			if got := f.fake.Calls(path); got != 1 {
				t.Errorf("%d fetches for 21 Token() calls within the clamped lifetime, want 1", got)
			}
		})
	}
}

func TestExpiresInZeroOrNegativeIsAnError(t *testing.T) {
	for _, expiresIn := range []int64{0, -1} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"access_token":"SOME-TOKEN-0123456789","expires_in":` + strconv.FormatInt(expiresIn, 10) + `}`))
		}))
		f := newFixture(t, ModeStable, func(o *Options) { o.BaseURL = srv.URL })
		if _, err := f.m.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "expires_in") {
			t.Errorf("expires_in %d: error %v, want one naming expires_in", expiresIn, err)
		}
		if f.m.Status().HasToken {
			t.Errorf("expires_in %d: a token was adopted", expiresIn)
		}
		srv.Close()
	}
}

// WeChat refuses a token fetch from an IP off the app's whitelist with
// 40164 or 61004 (docs and staff disagree); both must read the same.
func TestIPWhitelistRefusalIsNamedAndBackedOff(t *testing.T) {
	for _, errcode := range []int{40164, 61004} {
		t.Run(strconv.Itoa(errcode), func(t *testing.T) {
			f := newFixture(t, ModeStable, nil)
			f.fake.FailNextErrcode("/cgi-bin/stable_token", 100, errcode)
			_, err := f.m.Token(context.Background())
			var ae *wechat.Error
			if !errors.As(err, &ae) || ae.Code != wechat.Errcode(errcode) {
				t.Fatalf("Token() error %v, want WeChat's %d", err, errcode)
			}
			f.run(t)
			var waits []time.Duration
			for range 4 {
				w := f.timers.Next(t)
				waits = append(waits, w.D)
				f.clock.Advance(w.D)
				w.Fire(f.clock.Now())
			}
			f.timers.Next(t) // the fourth attempt is done
			want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second}
			for i := range want {
				if waits[i] != want[i] {
					t.Fatalf("waits %v, want %v (retried with backoff)", waits, want)
				}
			}
			logs := f.logs.String()
			if !strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, "egress IP is not on the app's IP whitelist") {
				t.Errorf("errcode %d was not reported as the IP-whitelist refusal: %s", errcode, logs)
			}
		})
	}
}
