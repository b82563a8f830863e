package upstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// outcomes counts what the hooks saw.
type outcomes struct {
	mu       sync.Mutex
	byKey    map[string]int
	errcodes map[wechat.Errcode]int
	replays  int
}

func (o *outcomes) hooks() Hooks {
	o.byKey, o.errcodes = map[string]int{}, map[wechat.Errcode]int{}
	return Hooks{
		Outcome: func(endpoint string, out Outcome) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.byKey[endpoint+" "+string(out)]++
		},
		Errcode: func(_ string, code wechat.Errcode) {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.errcodes[code]++
		},
		Replayed: func(string) { o.mu.Lock(); o.replays++; o.mu.Unlock() },
	}
}

func (o *outcomes) get(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byKey[key]
}

func newClient(t *testing.T, fake *wechattest.Server, gate quota.Gate) (*Client, *token.Manager, *outcomes) {
	t.Helper()
	seen := &outcomes{}
	c, err := New(Options{Base: fake.URL, Gate: gate, Hooks: seen.hooks()})
	if err != nil {
		t.Fatal(err)
	}
	m, err := token.New(token.Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret, BaseURL: fake.URL,
		Client: &http.Client{Transport: c.Transport()}})
	if err != nil {
		t.Fatal(err)
	}
	return c, m, seen
}

func post(t *testing.T, c *Client, call *Call, rawQuery string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://caller.invalid"+call.Path+"?"+rawQuery, nil)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Send(context.Background(), req, call)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestSendInjectsExactlyTheManagedToken(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	c, m, seen := newClient(t, fake, nil)
	call := &Call{Tokens: m, Path: "/wxa/msg_sec_check", Endpoint: "/wxa/msg_sec_check", Body: []byte(`{}`)}
	if _, b, err := post(t, c, call, "access_token=callers&access%5Ftoken=also&b=2;x"); err != nil || !strings.Contains(string(b), `"errcode":0`) {
		t.Fatalf("got %s, %v", b, err)
	}
	tok, _ := m.Token(context.Background())
	reqs := fake.Requests("/wxa/msg_sec_check")
	if len(reqs) != 1 || len(reqs[0].Query["access_token"]) != 1 || reqs[0].Query.Get("access_token") != tok.Value {
		t.Fatalf("WeChat saw %v, want exactly the managed token", reqs[0].Query)
	}
	if got := seen.get("/wxa/msg_sec_check ok"); got != 1 {
		t.Errorf("ok outcomes %d, want 1", got)
	}
	// The token fetch went through the same client and was counted too.
	if got := seen.get(wechat.PathStableToken + " ok"); got != 1 {
		t.Errorf("token fetch outcomes %d, want 1", got)
	}
}

func TestSendReplaysOnceOnADeadToken(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	c, m, seen := newClient(t, fake, nil)
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens()
	call := &Call{Tokens: m, Path: "/wxa/msg_sec_check", Endpoint: "/wxa/msg_sec_check", Body: []byte(`{}`)}
	if _, b, err := post(t, c, call, ""); err != nil || !strings.Contains(string(b), `"errcode":0`) {
		t.Fatalf("got %s, %v, want the replay's success", b, err)
	}
	if got := fake.Calls("/wxa/msg_sec_check"); got != 2 {
		t.Errorf("WeChat saw %d calls, want 2 (the call and one replay)", got)
	}
	if seen.replays != 1 || seen.get("/wxa/msg_sec_check errcode") != 1 || seen.get("/wxa/msg_sec_check ok") != 1 {
		t.Errorf("replays %d, outcomes %v", seen.replays, seen.byKey)
	}
	if seen.errcodes[wechat.InvalidCredential] != 1 {
		t.Errorf("errcodes %v, want one 40001", seen.errcodes)
	}
}

func TestAStreamedBodyIsNeverReplayed(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	c, m, _ := newClient(t, fake, nil)
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens()
	req, _ := http.NewRequest(http.MethodPost, "http://caller.invalid/wxa/msg_sec_check", strings.NewReader(`{}`))
	resp, err := c.Send(context.Background(), req, &Call{Tokens: m, Path: "/wxa/msg_sec_check", Endpoint: "/wxa/msg_sec_check"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if code, _ := ErrcodeOf(b); code != wechat.InvalidCredential || fake.Calls("/wxa/msg_sec_check") != 1 {
		t.Errorf("got %s after %d calls, want WeChat's 40001 after one", b, fake.Calls("/wxa/msg_sec_check"))
	}
}

// refuseAll is a Gate that admits nothing, counting what it was asked.
type refuseAll struct{ asked, observed atomic.Int32 }

func (g *refuseAll) Admit(context.Context, quota.Key) error {
	g.asked.Add(1)
	return &quota.Refusal{Code: wechat.MinuteQuota, Msg: "no", RetryAfter: time.Second}
}
func (g *refuseAll) Observe(context.Context, quota.Key, wechat.Errcode) { g.observed.Add(1) }

func TestTheGateIsAskedBeforeEveryRequest(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	gate := &refuseAll{}
	c, m, seen := newClient(t, fake, gate)
	call := &Call{Tokens: m, Path: "/wxa/msg_sec_check", Endpoint: "/wxa/msg_sec_check", Body: []byte(`{}`)}
	_, _, err := post(t, c, call, "")
	var refusal *quota.Refusal
	if !errors.As(err, &refusal) || refusal.Code != wechat.MinuteQuota {
		t.Fatalf("err %v, want the gate's refusal", err)
	}
	if fake.Calls("/wxa/msg_sec_check") != 0 || gate.asked.Load() != 1 || len(seen.byKey) != 1 {
		t.Errorf("WeChat saw %d calls, gate asked %d times, outcomes %v: want 0, 1 and the token fetch only",
			fake.Calls("/wxa/msg_sec_check"), gate.asked.Load(), seen.byKey)
	}
}

func TestQuotaErrcodesReachTheGate(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	gate := quota.NewLocal(quota.Options{})
	t.Cleanup(gate.Close)
	c, m, _ := newClient(t, fake, gate)
	fake.FailNextErrcode(wechat.PathUnlimited, 1, 45011)
	call := &Call{Tokens: m, Path: wechat.PathUnlimited, Endpoint: wechat.PathUnlimited, Body: []byte(`{"scene":"a"}`), Image: true}
	if _, b, _ := post(t, c, call, ""); !strings.Contains(string(b), "45011") {
		t.Fatalf("got %s, want WeChat's 45011", b)
	}
	if _, ok := gate.CooldownLeft(quota.Key{App: wechattest.DemoAppID, Endpoint: wechat.PathUnlimited}); !ok {
		t.Error("WeChat's 45011 started no cool-down")
	}
}

func TestAnImageOutcomeIsLeftToItsCaller(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	c, m, seen := newClient(t, fake, nil)
	call := &Call{Tokens: m, Path: wechat.PathUnlimited, Endpoint: wechat.PathUnlimited, Body: []byte(`{"scene":"a"}`), Image: true}
	if resp, _, err := post(t, c, call, ""); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v", err)
	}
	if n := seen.get(wechat.PathUnlimited + " ok"); n != 0 {
		t.Fatalf("an image call counted ok %d times before its caller judged it", n)
	}
	c.Report(wechat.PathUnlimited, BrokenImage)
	if n := seen.get(wechat.PathUnlimited + " broken_image"); n != 1 {
		t.Errorf("broken_image %d, want 1", n)
	}
}

func TestNoRedirectIsFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	c, m, seen := newClient(t, fake, nil)
	fake.FailNextRedirect("/wxa/msg_sec_check", 1, other.URL+"/steal")
	call := &Call{Tokens: m, Path: "/wxa/msg_sec_check", Endpoint: "/wxa/msg_sec_check", Body: []byte(`{}`)}
	resp, _, err := post(t, c, call, "")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("got %v %v, want the 302 itself", resp, err)
	}
	if elsewhere.Load() != 0 || seen.get("/wxa/msg_sec_check http_error") != 1 {
		t.Errorf("the other host saw %d requests; outcomes %v", elsewhere.Load(), seen.byKey)
	}
}

func TestTokenFetchesGoToTheBaseHostOnly(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	c, err := New(Options{Base: fake.URL})
	if err != nil {
		t.Fatal(err)
	}
	// A manager misconfigured to fetch from another host still reaches
	// only the configured upstream through this transport.
	m, err := token.New(token.Options{AppID: wechattest.DemoAppID, Secret: wechattest.DemoSecret, BaseURL: other.URL,
		Client: &http.Client{Transport: c.Transport()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if elsewhere.Load() != 0 || fake.Calls(wechat.PathStableToken) != 1 {
		t.Errorf("other host %d, fake %d token calls", elsewhere.Load(), fake.Calls(wechat.PathStableToken))
	}
}
