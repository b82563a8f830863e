package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// pregen's edges, each over the real binary.

// TestPregenDryRunEstimatesFromTheSidecarsLimits: the dry run's time comes
// from the limit and the cool-down the sidecar enforces, read from its API
// port (GET /wxa-sidecar/limits), not from WeChat's 5000 a minute ("at
// least 1 minute" was predicted for a run that took 3.2 s).
func TestPregenDryRunEstimatesFromTheSidecarsLimits(t *testing.T) {
	t.Parallel()
	p, fake := startWithFake(t, "UPSTREAM_LIMITS="+wechat.PathUnlimited+"=5/s:3")
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(20, "e"), false)

	code, body := get(t, "http://"+p.api+"/wxa-sidecar/limits?endpoint="+wechat.PathUnlimited)
	var ans struct {
		Limits []struct {
			App           string  `json:"app"`
			RatePerSecond float64 `json:"rate_per_second"`
			Burst         int     `json:"burst"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(body, &ans); code != 200 || err != nil || len(ans.Limits) != 1 ||
		ans.Limits[0].App != wechattest.DemoAppID || ans.Limits[0].RatePerSecond != 2 || ans.Limits[0].Burst != 3 {
		t.Fatalf("GET /wxa-sidecar/limits: %d %s (%v), want the app's 2/s burst 3", code, body, err)
	}
	if bytes.Contains(body, []byte(wechattest.DemoSecret)) {
		t.Error("the limits answer holds the app secret")
	}

	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--dry-run", "codes.csv")
	// 20 codes: 3 at once, 17 at 2 a second.
	want := "pregen: would take at least 9s (the sidecar lets 2 calls a second to getwxacodeunlimit through, 3 at once)"
	if res.code != 0 || !strings.Contains(res.stdout, want+"\n") {
		t.Fatalf("dry run: exit %d, want 0 and %q\n%s%s", res.code, want, res.stdout, res.stderr)
	}
	if strings.Contains(res.stdout, "minute(s)") {
		t.Errorf("the estimate still counts WeChat's minutes:\n%s", res.stdout)
	}

	// WeChat's 45011 starts a cool-down to the next minute: the dry run
	// says so and counts it.
	fake.FailNextErrcode(wechat.PathUnlimited, 1, int(wechat.MinuteQuota))
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.api+wechat.PathUnlimited, strings.NewReader(`{"scene":"cool"}`))
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	calls := fake.TotalCalls()
	res = runPregen(t, dir, "--sidecar", "http://"+p.api, "--dry-run", "codes.csv")
	if res.code != 0 || !strings.Contains(res.stdout, "it is cooling down (errcode 45011) for ") {
		t.Fatalf("dry run in a cool-down: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if got := fake.TotalCalls(); got != calls {
		t.Errorf("the dry run made %d calls to WeChat, want none", got-calls)
	}
}

var codesPerSecond = regexp.MustCompile(`([0-9.]+) codes/s`)

// TestPregenProgressSpeaksTheSummarysWords: the bar and the plain lines say
// "N invalid, M failed" as the summary does (the bar said "2 failed" for
// two invalid rows), and no rate shown exceeds what was done: the first
// frame once showed 282406 codes/s.
func TestPregenProgressSpeaksTheSummarysWords(t *testing.T) {
	t.Parallel()
	// 2 a second after a burst of 3: about 8 s, so a plain line shows at 5 s.
	p, _ := startWithFake(t, "UPSTREAM_LIMITS="+wechat.PathUnlimited+"=5/s:3")
	dir := t.TempDir()
	scenes := sceneList(20, "v")
	scenes[3], scenes[7] = "bad%scene", strings.Repeat("x", 33)
	writeScenes(t, filepath.Join(dir, "codes.csv"), scenes, true)
	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "--progress", "lines", "codes.csv")
	if res.code != 1 || !strings.Contains(res.stdout, "18 with their image (18 written now, 0 already there), 2 invalid, 0 failed") {
		t.Fatalf("exit %d, want 1 with 18 images and 2 invalid\n%s%s", res.code, res.stdout, res.stderr)
	}
	lines := regexp.MustCompile(`pregen: (\d+)/18 done, 2 invalid, 0 failed, ([0-9.]+) codes/s, ETA \S+\n`).FindAllStringSubmatch(res.stderr, -1)
	if len(lines) == 0 {
		t.Fatalf("no progress line with the summary's words:\n%s", res.stderr)
	}
	for _, l := range lines {
		done, _ := strconv.Atoi(l[1])
		if rate, _ := strconv.ParseFloat(l[2], 64); rate > float64(done) {
			t.Errorf("%q: a rate above the codes done in the first second", strings.TrimSpace(l[0]))
		}
	}

	// The bar, all from the cache: the whole run takes a moment, and no
	// rate above the 18 codes done may show.
	res = runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "again", "--progress", "bar", "codes.csv")
	if res.code != 1 || !strings.Contains(res.stderr, "2 invalid, 0 failed") || !strings.Contains(res.stderr, "(17/17)") {
		t.Fatalf("bar: exit %d, want its frames with 2 invalid, 0 failed\n%s%s", res.code, res.stdout, res.stderr)
	}
	if regexp.MustCompile(`(^|\r)[0-9]+ failed`).MatchString(res.stderr) {
		t.Errorf("the bar says failed for what the summary calls invalid:\n%q", res.stderr)
	}
	for _, m := range codesPerSecond.FindAllStringSubmatch(res.stderr, -1) {
		if rate, _ := strconv.ParseFloat(m[1], 64); rate > 18 {
			t.Errorf("the bar shows %s codes/s for 18 codes", m[1])
		}
	}
}

// TestPregenSavesOnlyWholeImages: a sidecar (or whatever answers in its
// place: a forged shared-tier entry, a proxy's error page) answering
// 200 with JPEG magic before an HTML page gets nothing saved: the row
// fails and the run exits 1. It once saved 41 bytes of HTML as .jpg and
// exited 0.
func TestPregenSavesOnlyWholeImages(t *testing.T) {
	t.Parallel()
	html := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, "<html><script>alert(1)</script></html>\n"...)
	if len(html) != 43 {
		t.Logf("%d bytes", len(html))
	}
	standIn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(html)
	}))
	t.Cleanup(standIn.Close)
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(3, "h"), false)
	for _, out := range [][]string{{"--out", "out"}, {"--zip", "codes.zip"}} {
		res := runPregen(t, dir, append([]string{"--sidecar", standIn.URL, "--progress", "none", "codes.csv"}, out...)...)
		if res.code != 1 || !strings.Contains(res.stdout, "0 with their image (0 written now, 0 already there), 0 invalid, 3 failed") ||
			!strings.Contains(res.stdout, "not a whole .jpg") {
			t.Errorf("%v: exit %d, want 1 with 3 failed rows saying why\n%s%s", out, res.code, res.stdout, res.stderr)
		}
	}
	if imgs, _ := filepath.Glob(filepath.Join(dir, "out", "*.jpg")); len(imgs) > 0 {
		t.Errorf("saved %v", imgs)
	}
	if zr, err := zip.OpenReader(filepath.Join(dir, "codes.zip")); err == nil {
		for _, f := range zr.File {
			if f.Name != "manifest.csv" {
				t.Errorf("the zip holds %s", f.Name)
			}
		}
		zr.Close()
	}
}

// TestPregenNeverPrintsTheSidecarPassword: --sidecar may carry credentials
// for a proxy in front of the sidecar; every message shows them redacted,
// and none repeats its prefix ("pregen: … pregen: Post …").
func TestPregenNeverPrintsTheSidecarPassword(t *testing.T) {
	t.Parallel()
	const password = "hunter2-pregen"
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(3, "w"), false)
	nobody := freePort(t)
	for _, args := range [][]string{
		{"--sidecar", "http://ops:" + password + "@" + nobody, "--out", "out"},
		{"--sidecar", "http://ops:" + password + "@" + nobody, "--dry-run"},
		{"--sidecar", "ftp://ops:" + password + "@" + nobody, "--out", "out"},
		{"--sidecar", "http://ops:" + password + "@" + nobody + ":bad", "--out", "out"},
	} {
		res := runPregen(t, dir, append(args, "codes.csv")...)
		all := res.stdout + res.stderr
		if res.code != 2 || strings.Contains(all, password) {
			t.Errorf("%v: exit %d, want 2 and no password\n%s", args, res.code, all)
		}
		if strings.Count(all, "pregen:") != strings.Count(all, "\n") {
			t.Errorf("%v: want one pregen: prefix a line\n%s", args, all)
		}
		if args[1] == "http://ops:"+password+"@"+nobody && !strings.Contains(all, "http://ops:xxxxx@"+nobody) {
			t.Errorf("%v: the message does not name the sidecar (redacted)\n%s", args, all)
		}
	}

	// A sidecar that answers, reached with credentials: nothing printed
	// holds them either.
	p, _ := startWithFake(t)
	sidecar := "http://ops:" + password + "@" + p.api
	res := runPregen(t, dir, "--sidecar", sidecar, "--out", "ok", "--progress", "lines", "codes.csv")
	if res.code != 0 || strings.Contains(res.stdout+res.stderr, password) {
		t.Errorf("exit %d, want 0 and no password\n%s%s", res.code, res.stdout, res.stderr)
	}
}

// TestPregenAvoidsWindowsReservedNames: a row named CON (any case, any
// extension) is no file Windows can hold; it gets a suffix.
func TestPregenAvoidsWindowsReservedNames(t *testing.T) {
	t.Parallel()
	p, _ := startWithFake(t)
	dir := t.TempDir()
	input := "name,scene,width,is_hyaline\nCON,r1,280,true\nnul.txt,r2,280,true\nCom1,r3,280,true\nlpt9,r4,280,true\nConsole,r5,280,true\n"
	os.WriteFile(filepath.Join(dir, "codes.csv"), []byte(input), 0o644)
	for _, out := range [][]string{{"--out", "out"}, {"--zip", "codes.zip"}} {
		res := runPregen(t, dir, append([]string{"--sidecar", "http://" + p.api, "--progress", "none", "codes.csv"}, out...)...)
		if res.code != 0 {
			t.Fatalf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
	}
	want := []string{"CON_.png", "Com1_.png", "Console.png", "lpt9_.png", "manifest.csv", "nul_.txt.png"}
	var got []string
	entries, _ := os.ReadDir(filepath.Join(dir, "out"))
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Errorf("--out holds %v, want %v", got, want)
	}
	zr, err := zip.OpenReader(filepath.Join(dir, "codes.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	got = got[:0]
	for _, f := range zr.File {
		got = append(got, f.Name)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("the zip holds %v, want %v", got, want)
	}
}

// TestPregenManifestSaysWhatItHolds: the hash column is request_sha256 (it
// was called request), and a manifest written before, with the old name,
// still resumes: a rerun against a sidecar with an empty cache asks
// nothing of WeChat.
func TestPregenManifestSaysWhatItHolds(t *testing.T) {
	t.Parallel()
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	env := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"WECHAT_API_URL=" + fake.URL}
	p := startSidecar(t, env)
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(6, "o"), true)
	if res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "codes.csv"); res.code != 0 {
		t.Fatalf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	path := filepath.Join(dir, "out", "manifest.csv")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	header, rest, _ := strings.Cut(string(b), "\n")
	if header != "line,file,sha256,bytes,result,request_sha256" {
		t.Fatalf("manifest header %q, want its last column named request_sha256", header)
	}
	// As the version before wrote it.
	os.WriteFile(path, []byte("line,file,sha256,bytes,result,request\n"+rest), 0o644)
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p = startSidecar(t, env)
	calls := fake.Calls(wechat.PathUnlimited)
	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "codes.csv")
	if res.code != 0 || !strings.Contains(res.stdout, "6 with their image (0 written now, 6 already there)") {
		t.Fatalf("resuming an old manifest: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if got := fake.Calls(wechat.PathUnlimited); got != calls {
		t.Errorf("resuming made %d calls to WeChat, want none", got-calls)
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "line,file,sha256,bytes,result,request_sha256\n") {
		t.Errorf("the rewritten manifest: %q", fmt.Sprintf("%.60s", b))
	}
}
