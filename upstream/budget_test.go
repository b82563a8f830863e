package upstream

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// orderGate records, in one log shared with other gates, each Admit.
type orderGate struct {
	name string
	mu   *sync.Mutex
	log  *[]string
}

func (g orderGate) Admit(_ context.Context, k quota.Key) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	*g.log = append(*g.log, g.name+" "+k.Endpoint)
	return nil
}
func (g orderGate) Observe(context.Context, quota.Key, wechat.Errcode) {
	g.mu.Lock()
	defer g.mu.Unlock()
	*g.log = append(*g.log, g.name+" observed")
}

func TestABudgetIsAskedBeforeTheGateForEveryRequest(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	var mu sync.Mutex
	var log []string
	c, m, _ := newClient(t, fake, orderGate{"gate", &mu, &log})
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens() // the call is replayed once: two requests
	log = nil
	call := &Call{Tokens: m, Path: "/wxa/msg_sec_check", Endpoint: "/wxa/msg_sec_check", Body: []byte(`{}`),
		Budget: orderGate{"budget", &mu, &log}}
	if _, b, err := post(t, c, call, ""); err != nil || !strings.Contains(string(b), `"errcode":0`) {
		t.Fatalf("got %s, %v", b, err)
	}
	want := []string{"budget /wxa/msg_sec_check", "gate /wxa/msg_sec_check", "gate observed",
		"budget /wxa/msg_sec_check", "gate /wxa/msg_sec_check"}
	if strings.Join(log, ", ") != strings.Join(want, ", ") {
		t.Errorf("admissions %q, want %q", log, want)
	}
}

func TestABudgetsRefusalSpendsNothingOfTheGate(t *testing.T) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	gate, budget := &refuseAll{}, &refuseAll{}
	c, m, _ := newClient(t, fake, gate)
	call := &Call{Tokens: m, Path: wechat.PathUnlimited, Endpoint: wechat.PathUnlimited, Body: []byte(`{"scene":"a"}`),
		Image: true, Budget: budget}
	_, _, err := post(t, c, call, "")
	var refusal *quota.Refusal
	if !errors.As(err, &refusal) {
		t.Fatalf("err %v, want the budget's refusal", err)
	}
	if gate.asked.Load() != 0 || budget.asked.Load() != 1 || fake.Calls(wechat.PathUnlimited) != 0 {
		t.Errorf("gate asked %d, budget asked %d, WeChat saw %d: want 0, 1, 0",
			gate.asked.Load(), budget.asked.Load(), fake.Calls(wechat.PathUnlimited))
	}
}
