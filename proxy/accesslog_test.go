package proxy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// accessLines are the access log's lines in logs, parsed.
func accessLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if m["msg"] == "request" {
			lines = append(lines, m)
		}
	}
	return lines
}

// waitForAccessLines waits up to 10 s for n lines: a line is written as
// its request ends, which may be after the caller has read a large image.
func waitForAccessLines(t *testing.T, logs *wechattest.LogBuffer, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := accessLines(t, logs.String())
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log lines, want %d:\n%s", len(lines), n, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func withAccessLog(o *Options) { o.AccessLog = true }

func TestAccessLogOneLinePerRequestWithoutSecrets(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true, proxy: withAccessLog})
	const callerToken = "CALLER-TOKEN-must-not-be-logged"
	code := `{"scene":"access-log"}`
	type want struct {
		method, path, endpoint string
		status                 int
		errcode                any // nil: no errcode field
		cacheStatus            any // nil: no cache_status field
		app                    any
	}
	demo := wechattest.DemoAppID
	steps := []struct {
		do   func() response
		want want
	}{
		{func() response { return h.postJSON(pathUnlimited, code) },
			want{"POST", pathUnlimited, pathUnlimited, 200, nil, "fwd=uri-miss; stored", demo}},
		{func() response { return h.postJSON(pathUnlimited+"?access_token="+callerToken, code) },
			want{"POST", pathUnlimited, pathUnlimited, 200, nil, "hit", demo}},
		{func() response { return h.get("/cgi-bin/getcallbackip?access_token=" + callerToken) },
			want{"GET", "/cgi-bin/getcallbackip", "/cgi-bin/getcallbackip", 200, 0.0, nil, demo}},
		{func() response {
			return h.get(pathToken + "?grant_type=client_credential&appid=" + demo + "&secret=" + wechattest.DemoSecret)
		}, want{"GET", pathToken, pathToken, 200, 0.0, nil, demo}},
		{func() response {
			return h.postJSON(pathStableToken, `{"grant_type":"client_credential","appid":"`+demo+`","secret":"`+wechattest.DemoSecret+`"}`)
		}, want{"POST", pathStableToken, pathStableToken, 200, 0.0, nil, demo}},
		{func() response {
			return h.get(pathToken + "?grant_type=client_credential&appid=" + demo + "&secret=wrong-secret-value")
		}, want{"GET", pathToken, pathToken, 200, float64(errcodeInvalidSecret), nil, demo}},
		{func() response { return h.do(http.MethodDelete, "/wxa/anything", "", nil) },
			want{"DELETE", "/wxa/anything", "other", 405, float64(errcodeNeedPOST), nil, nil}},
		{func() response { return h.get("/qrcode?scene=access-log") },
			want{"GET", "/qrcode", "qrcode", 200, nil, "hit", demo}},
		{func() response { return h.get("/apps/wxnotmanaged/qrcode?scene=x") },
			want{"GET", "/apps/wxnotmanaged/qrcode", "other", 200, float64(errcodeInvalidAppID), nil, nil}},
	}
	var tokens []string
	for i, step := range steps {
		resp := step.do()
		if resp.status != step.want.status {
			t.Fatalf("step %d: status %d, want %d: %s", i, resp.status, step.want.status, truncate(resp.body, 200))
		}
		// One request's line before the next request starts: in order.
		waitForAccessLines(t, h.logs, i+1)
		var answer struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(resp.body, &answer) == nil && answer.AccessToken != "" {
			tokens = append(tokens, answer.AccessToken)
		}
	}
	logs := h.logs.String()
	lines := accessLines(t, logs)
	if len(lines) != len(steps) {
		t.Fatalf("%d access log lines for %d requests:\n%s", len(lines), len(steps), logs)
	}
	for i, step := range steps {
		l, w := lines[i], step.want
		checks := map[string][2]any{
			"listener": {l["listener"], "api"}, "method": {l["method"], w.method}, "path": {l["path"], w.path},
			"endpoint": {l["endpoint"], w.endpoint}, "status": {l["status"], float64(w.status)},
			"errcode": {l["errcode"], w.errcode}, "cache_status": {l["cache_status"], w.cacheStatus}, "app": {l["app"], w.app},
			"level": {l["level"], "INFO"},
		}
		for name, c := range checks {
			if c[0] != c[1] {
				t.Errorf("line %d %s = %#v, want %#v\n%v", i, name, c[0], c[1], l)
			}
		}
		if d, ok := l["duration"].(string); !ok {
			t.Errorf("line %d duration %#v, want a string", i, l["duration"])
		} else if _, err := time.ParseDuration(d); err != nil {
			t.Errorf("line %d duration %q: %v", i, d, err)
		}
	}
	secrets := append([]string{callerToken, wechattest.DemoSecret, "wrong-secret-value", h.currentToken(wechattest.DemoAppID),
		"access_token=", "grant_type", "scene"}, tokens...)
	for _, l := range lines {
		b, _ := json.Marshal(l)
		if leaked := containsAny(string(b), secrets...); leaked != "" {
			t.Errorf("access log line carries %q: %s", leaked, b)
		}
	}
	if len(tokens) < 2 {
		t.Fatalf("the token endpoints answered no token (%d)", len(tokens))
	}
}

func TestAccessLogOffOrAboveInfoWritesNothing(t *testing.T) {
	for _, tt := range []struct {
		name  string
		on    bool
		level slog.Level
	}{{"off", false, slog.LevelDebug}, {"LOG_LEVEL=warn", true, slog.LevelWarn}, {"LOG_LEVEL=error", true, slog.LevelError}} {
		t.Run(tt.name, func(t *testing.T) {
			var logs wechattest.LogBuffer
			h := newHarness(t, harnessOptions{cache: true, proxy: func(o *Options) {
				o.AccessLog = tt.on
				o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: tt.level}))
			}})
			h.postJSON(pathUnlimited, `{"scene":"quiet"}`)
			h.get("/cgi-bin/getcallbackip")
			// A request is counted after its line would be written.
			deadline := time.Now().Add(10 * time.Second)
			for testutil.ToFloat64(h.metrics.Requests.WithLabelValues(routeWxacode, "200")) < 1 ||
				testutil.ToFloat64(h.metrics.Requests.WithLabelValues(routePassthrough, "200")) < 1 {
				if time.Now().After(deadline) {
					t.Fatal("the requests were never counted")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if lines := accessLines(t, logs.String()); len(lines) != 0 {
				t.Errorf("%d access log lines, want none: %v", len(lines), lines)
			}
		})
	}
}

func TestAccessLogOnTheQRCodePort(t *testing.T) {
	h := newHarness(t, harnessOptions{cache: true, proxy: withAccessLog})
	url := newServer(t, h.proxy.QRCodeHandler())
	for i, path := range []string{"/qrcode?scene=port", "/apps/" + wechattest.DemoAppID + "/qrcode?scene=port", "/cgi-bin/getcallbackip"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		waitForAccessLines(t, h.logs, i+1)
	}
	lines := accessLines(t, h.logs.String())
	if len(lines) != 3 {
		t.Fatalf("%d access log lines, want 3:\n%s", len(lines), h.logs.String())
	}
	want := []string{
		`qrcode GET /qrcode qrcode 200 <nil> fwd=uri-miss; stored ` + wechattest.DemoAppID,
		`qrcode GET /apps/` + wechattest.DemoAppID + `/qrcode qrcode 200 <nil> hit ` + wechattest.DemoAppID,
		fmt.Sprintf(`qrcode GET /cgi-bin/getcallbackip other 404 %d <nil> <nil>`, errcodeInvalidURL),
	}
	for i, l := range lines {
		got := fmt.Sprintf("%v %v %v %v %v %v %v %v", l["listener"], l["method"], l["path"], l["endpoint"], l["status"],
			l["errcode"], l["cache_status"], l["app"])
		if got != want[i] {
			t.Errorf("line %d: %s\nwant    %s", i, got, want[i])
		}
	}
}

// TestLeadingErrcode: the errcode is read from the start of an answer,
// which may be cut anywhere, and only at the top level.
func TestLeadingErrcode(t *testing.T) {
	for body, want := range map[string]int64{
		`{"errcode":45011,"errmsg":"api minute-quota reach limit"}`: 45011,
		`{"errmsg":"ok","errcode":0,"list":[1,2`:                    0,
		`{"data":{"errcode":5},"errcode":-1}`:                       -1,
		`{"errcode":40001,"errm`:                                    40001,
	} {
		if got, ok := leadingErrcode([]byte(body)); !ok || got != want {
			t.Errorf("%s: %d %v, want %d", body, got, ok, want)
		}
	}
	for _, body := range []string{`{"data":{"errcode":5}}`, `{"list":[1,2,3`, `[]`, ``, `{"errcode":"x"}`} {
		if got, ok := leadingErrcode([]byte(body)); ok {
			t.Errorf("%s: %d, want none", body, got)
		}
	}
}
