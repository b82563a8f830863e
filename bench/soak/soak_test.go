package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// knownOpen are the violations today's main is known to commit, each with
// the issue that fixes it. The soak still reports them (t.Log); delete an
// entry when its fix lands, so that it fails the test again.
var knownOpen = map[string]string{
	// Around a Redis kill or a breaker open on one replica while the
	// others use Redis again, the fleet can still go a few calls over a
	// window (35 in 1 s against 32, 213 in 10 s against 212 with seed 3;
	// 55 and 326 before the fallback started empty): docs/fleet.md, "What
	// stays approximate".
	"rate_1s":  "issue 17",
	"rate_10s": "issue 17",
}

// TestSoak runs the soak's 60 s version as `go run ./bench/soak` would:
// three replicas of this checkout, a real redis-server, every kind of fault
// once. The soak is built without -race even under `go test -race`: the
// fake WeChat draws every image in its process, and race-instrumented it
// cannot keep up on two CPUs (the checks' own code is race-tested by the
// tests below).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak takes about 90 s")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed; .ci/run installs it")
		}
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "soak")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-duration", "60s", "-seed", "1", "-out", filepath.Join(dir, "out")).CombinedOutput()
	t.Logf("%s", out)
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) { // 1: violations, judged below
		t.Fatalf("soak: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "out", "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sum summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatal(err)
	}
	for _, kind := range slices.Sorted(maps.Keys(sum.Violations)) {
		if issue, ok := knownOpen[kind]; ok {
			t.Logf("known violation (%s): %s %d", issue, kind, sum.Violations[kind])
			continue
		}
		t.Errorf("violation: %s %d (examples in the log above)", kind, sum.Violations[kind])
	}
	// The soak must have seen something to judge.
	if sum.Images < 1000 || sum.Codes.WithImage < 100 {
		t.Errorf("only %d images, %d codes drawn: the load did not run", sum.Images, sum.Codes.WithImage)
	}
	for _, f := range sum.Faults {
		if f.Started == 0 {
			t.Errorf("fault %s never ran", f.Kind)
		}
	}
	for _, name := range []string{"latency.png", "calls.png", "rate.png", "resources.png"} {
		if st, err := os.Stat(filepath.Join(dir, "out", name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The checks themselves, without a fleet: each must bite.

func TestCheckerFlagsBrokenAndInconsistentImages(t *testing.T) {
	c := newChecker()
	img := pngOf(t, 1)
	c.image("a", img, "test")
	c.image("a", img, "test")
	if n := c.count(); n != 0 {
		t.Fatalf("one good image twice: %d violations, want 0", n)
	}
	c.image("a", pngOf(t, 2), "test")
	if c.violations["inconsistent_image"] != 1 {
		t.Errorf("a second image for one scene: violations %v, want inconsistent_image 1", c.violations)
	}
	broken := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte("x"), 100)...)
	c.image("b", append(broken, 0xFF, 0xD9), "test")
	if c.violations["broken_image"] != 1 {
		t.Errorf("an undecodable image: violations %v, want broken_image 1", c.violations)
	}
}

func TestLoadFlagsTokenErrorsAndNotImages(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		want                    string // the violation, "" for none
	}{
		{"40001", "application/json; encoding=utf-8", `{"errcode":40001,"errmsg":"invalid credential"}`, 200, "token_error"},
		{"42001", "application/json", `{"errcode":42001,"errmsg":"expired"}`, 200, "token_error"},
		{"40014 on 429", "application/json", `{"errcode":40014,"errmsg":"x"}`, 429, "token_error"},
		{"-1 is a fault's", "application/json", `{"errcode":-1,"errmsg":"system error"}`, 502, ""},
		{"45011 is the limit's", "application/json", `{"errcode":45011,"errmsg":"x"}`, 200, ""},
		{"HTML as an image", "text/html", `<script>alert(1)</script>`, 200, "broken_image"},
		{"JSON without errcode", "application/json", `{"ok":true}`, 200, "broken_image"},
		{"garbage labelled image", "image/jpeg", "\xff\xd8\xffgarbage\xff\xd9", 200, "broken_image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			r := &replica{api: addr, qr: addr}
			l := newLoad(defaultConfig(), []*replica{r}, newChecker())
			l.t0 = time.Now()
			l.do(context.Background(), r, kindCode, "s1")
			got := ""
			for k := range l.chk.violations {
				got = k
			}
			if got != tc.want {
				t.Errorf("violations %v, want %q", l.chk.violations, tc.want)
			}
		})
	}
}

func TestMaxWindow(t *testing.T) {
	at := []float64{0, 0.5, 0.99, 1.0, 1.5, 5, 5.1, 5.2, 5.3}
	most, from, over := maxWindow(at, 1, 3)
	if most != 4 || from != 5 || over != 1 {
		t.Errorf("maxWindow = %d from %v, %d over; want 4 from 5, 1 over", most, from, over)
	}
	if most, _, over := maxWindow(at, 10, 9); most != 9 || over != 0 {
		t.Errorf("10 s: %d, %d over; want 9, 0", most, over)
	}
}

func TestPlanPlacesEveryKindApart(t *testing.T) {
	for seed := range uint64(40) {
		d, each := 60*time.Second, 1
		if seed%2 == 1 {
			d, each = 10*time.Minute, 3
		}
		faults := plan(rand.New(rand.NewPCG(seed, 1)), allKinds, 0, d, 3)
		kinds := map[string]int{}
		for i, f := range faults {
			kinds[f.Kind]++
			if f.At < 3 || f.At+f.For > d.Seconds()-15 {
				t.Errorf("seed %d: %s at %.1f s for %.1f s, outside 3-45 s", seed, f.Kind, f.At, f.For)
			}
			for _, g := range faults[:i] {
				if group(g.Kind) == group(f.Kind) && f.At < g.At+g.For && g.At < f.At+f.For {
					t.Errorf("seed %d: %s and %s overlap", seed, g.Kind, f.Kind)
				}
			}
		}
		for _, k := range allKinds {
			want := each
			if k == k45011 {
				want = 1 // once a run: it closes the endpoint for up to a minute
			}
			if kinds[k] != want {
				t.Errorf("seed %d, %s: kinds placed %v, want %d of each (one 45011)", seed, d, kinds, each)
				break
			}
		}
	}
}

// TestFaultLayer drives the layer in front of a fake: bursts answer as
// they say, a corrupt image never decodes, a sticky revocation hands out
// the dead token until a forced refresh, and every call is counted.
func TestFaultLayer(t *testing.T) {
	fake := wechattest.New(wechattest.Options{})
	u, err := newUpstream(fake, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	u.start(time.Now())
	post := func(path, body string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Post(u.urls[0]+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
	tokenBody := `{"grant_type":"client_credential","appid":"` + wechattest.DemoAppID + `","secret":"` + wechattest.DemoSecret + `"`
	_, tok := post(stableTokenPath, tokenBody+`}`)
	token := string(tok[strings.Index(string(tok), `"access_token":"`)+16:])
	token = token[:strings.IndexByte(token, '"')]
	code := func() (*http.Response, []byte) {
		return post(codePath+"?access_token="+token, `{"scene":"a"}`)
	}
	if resp, body := code(); !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/") {
		t.Fatalf("no fault: %d %s", resp.StatusCode, body)
	}

	now := time.Now()
	u.apply(&fault{Kind: kBusy, For: 60, Share: 1}, now)
	if _, body := code(); !bytes.Contains(body, []byte(`"errcode":-1`)) {
		t.Errorf("busy burst: %s", body)
	}
	u.bursts = nil
	u.apply(&fault{Kind: kCorrupt, For: 60, Share: 1}, now)
	resp, body := code()
	if resp.StatusCode != 200 || body[0] != 0xFF || body[len(body)-1] != 0xD9 {
		t.Errorf("corrupt: %d, %d bytes", resp.StatusCode, len(body))
	}
	if _, _, err := image.Decode(bytes.NewReader(body)); err == nil {
		t.Error("a corrupt image decodes")
	}
	u.bursts = nil

	sticky := &fault{Kind: kSticky, For: 60}
	u.apply(sticky, now)
	if _, body := post(stableTokenPath, tokenBody+`}`); !bytes.Contains(body, []byte(token)) {
		t.Errorf("sticky: a normal fetch got %s, want the dead token", body)
	}
	if _, body := code(); !bytes.Contains(body, []byte("40001")) {
		t.Errorf("sticky: the dead token got %s, want 40001", body)
	}
	if _, body := post(stableTokenPath, tokenBody+`,"force_refresh":true}`); bytes.Contains(body, []byte(token)) {
		t.Errorf("sticky: a forced refresh got the dead token: %s", body)
	}
	if !u.stickyOver(sticky, time.Now()) {
		t.Error("sticky: not over after a forced refresh")
	}

	byOutcome := map[string]int{}
	for _, c := range u.snapshot() {
		byOutcome[c.Path+" "+c.Outcome]++
	}
	want := map[string]int{
		stableTokenPath + " ok_json": 3,
		codePath + " image":          1,
		codePath + " errcode":        2, // -1, then 40001
		codePath + " corrupt":        1,
	}
	if !maps.Equal(byOutcome, want) {
		t.Errorf("calls counted %v, want %v", byOutcome, want)
	}
}

func pngOf(t *testing.T, shade uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	img.SetGray(1, 1, color.Gray{Y: shade})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
