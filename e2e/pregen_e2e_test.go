package e2e

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// pregenResult is one finished `wxa-sidecar pregen` process.
type pregenResult struct {
	code           int
	stdout, stderr string
}

// pregenCmd is `wxa-sidecar pregen args...`, the real binary, in dir.
func pregenCmd(t *testing.T, ctx context.Context, dir string, args ...string) (*exec.Cmd, *bytes.Buffer, *wechattest.LogBuffer) {
	t.Helper()
	bin := buildSidecar(t)
	cmd := exec.CommandContext(ctx, bin, append([]string{"pregen"}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stdout bytes.Buffer
	stderr := &wechattest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	return cmd, &stdout, stderr
}

// runPregen runs pregen to its end (at most two minutes).
func runPregen(t *testing.T, dir string, args ...string) pregenResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, stdout, stderr := pregenCmd(t, ctx, dir, args...)
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("pregen: %v", err)
	}
	return pregenResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// writeScenes writes a CSV of one getwxacodeunlimit row per scene, at
// width 280 (the smallest); transparent codes are PNGs, lossless and the
// cheapest to decode. A scene of the form "page:P:S" asks for scene S on
// page P.
func writeScenes(t *testing.T, path string, scenes []string, transparent bool) {
	t.Helper()
	var b strings.Builder
	b.WriteString("scene,page,width,is_hyaline\r\n")
	for _, s := range scenes {
		page := ""
		if p, rest, ok := strings.Cut(strings.TrimPrefix(s, "page:"), ":"); strings.HasPrefix(s, "page:") && ok {
			page, s = p, rest
		}
		fmt.Fprintf(&b, "%s,%s,280,%v\r\n", s, page, transparent)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sceneList(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// readManifestFile reads manifest.csv: line -> its columns.
func readManifestFile(t *testing.T, b []byte) map[int][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("manifest: %v\n%s", err, b)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != "line,file,sha256,bytes,result,request_sha256" {
		t.Fatalf("manifest header: %v", recs)
	}
	out := map[int][]string{}
	for _, r := range recs[1:] {
		line, err := strconv.Atoi(r[0])
		if err != nil {
			t.Fatalf("manifest line %q", r[0])
		}
		out[line] = r
	}
	return out
}

// sceneOfImage decodes a code from the fake to the scene it was asked for.
func sceneOfImage(t *testing.T, b []byte) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not an image: %v", err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	// gozxing misreads a few of the fake's small codes one way and not
	// another: the image is good if any reading finds it.
	var res *gozxing.Result
	for _, hints := range []map[gozxing.DecodeHintType]any{nil, {gozxing.DecodeHintType_PURE_BARCODE: true},
		{gozxing.DecodeHintType_TRY_HARDER: true}} {
		if res, err = qrcode.NewQRCodeReader().Decode(bmp, hints); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no QR code: %v", err)
	}
	u, err := url.Parse(res.GetText())
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("scene")
}

// requestsTotal sums wxa_sidecar_requests_total over its labels: every
// request the sidecar's API port answered.
func requestsTotal(t *testing.T, p *sidecarProcess) float64 {
	t.Helper()
	_, body := get(t, "http://"+p.admin+"/metrics")
	total := 0.0
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, "wxa_sidecar_requests_total{"); ok {
			v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q", line)
			}
			total += v
		}
	}
	return total
}

// scenesAtFake counts the getwxacodeunlimit calls the fake saw per scene.
func scenesAtFake(t *testing.T, fake *wechattest.Server) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range fake.Requests(wechat.PathUnlimited) {
		var body struct {
			Scene string `json:"scene"`
		}
		json.Unmarshal(r.Body, &body)
		out[body.Scene]++
	}
	return out
}

func mtimes(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.ModTime()
	}
	return out
}

// TestPregenFiveHundredCodes is a whole run: 500 rows, 3 invalid, a
// real sidecar against the fake; then a second run that costs nothing, a
// zip with the same bytes, and only-if-cached spending nothing.
func TestPregenFiveHundredCodes(t *testing.T) {
	t.Parallel()
	p, fake := startWithFake(t)
	dir := t.TempDir()
	scenes := sceneList(500, "t")
	// Lines are index+2 (the header is line 1).
	invalid := map[int]wechat.Errcode{10: wechat.InvalidScene, 200: wechat.InvalidSceneLength, 400: wechat.InvalidPage}
	scenes[10] = "bad%scene"
	scenes[200] = strings.Repeat("x", 33)
	scenes[400] = "page:/leading-slash:t-0400"
	writeScenes(t, filepath.Join(dir, "codes.csv"), scenes, true)

	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "--concurrency", "8", "codes.csv")
	if res.code != 1 {
		t.Fatalf("exit %d, want 1 (3 invalid rows)\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	for i, code := range invalid {
		want := fmt.Sprintf("line %d: invalid: errcode %d", i+2, code)
		if !strings.Contains(res.stdout, want) || !strings.Contains(res.stderr, want) {
			t.Errorf("summary or report lacks %q\nstdout:\n%s\nstderr:\n%s", want, res.stdout, res.stderr)
		}
	}
	if got := fake.Calls(wechat.PathUnlimited); got != 497 {
		t.Errorf("%d upstream calls, want 497", got)
	}
	out := filepath.Join(dir, "out")
	manifestBytes, err := os.ReadFile(filepath.Join(out, "manifest.csv"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := readManifestFile(t, manifestBytes)
	images := 0
	for i, scene := range scenes {
		m := manifest[i+2]
		if m == nil {
			t.Fatalf("manifest has no line %d", i+2)
		}
		if code, bad := invalid[i]; bad {
			if m[4] != "errcode "+code.String()+": "+wechat.Errorf(code, "").Msg && !strings.HasPrefix(m[4], "errcode "+code.String()) {
				t.Errorf("manifest line %d: result %q, want errcode %d", i+2, m[4], code)
			}
			continue
		}
		if m[4] != "ok" || m[1] != scene+".png" {
			t.Fatalf("manifest line %d: %v, want ok and %s.png", i+2, m, scene)
		}
		img, err := os.ReadFile(filepath.Join(out, m[1]))
		if err != nil {
			t.Fatal(err)
		}
		if got := sceneOfImage(t, img); got != scene {
			t.Fatalf("%s decodes to scene %q", m[1], got)
		}
		images++
	}
	if images != 497 {
		t.Errorf("%d images, want 497", images)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 498 {
		t.Errorf("%d files in --out, want 497 images and manifest.csv", len(entries))
	}

	// Second run: nothing reaches the sidecar, nothing is written.
	before, requests := mtimes(t, out), requestsTotal(t, p)
	res = runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "--quiet", "codes.csv")
	if res.code != 1 || !strings.Contains(res.stdout, "497 already there") {
		t.Fatalf("second run: exit %d, want 1 and 497 already there\n%s%s", res.code, res.stdout, res.stderr)
	}
	if got := requestsTotal(t, p); got != requests {
		t.Errorf("second run: wxa_sidecar_requests_total moved from %v to %v, want no request", requests, got)
	}
	after := mtimes(t, out)
	for name, mt := range before {
		if name != "manifest.csv" && !after[name].Equal(mt) {
			t.Errorf("second run rewrote %s", name)
		}
	}

	// A zip holds the same bytes, served from the sidecar's cache.
	res = runPregen(t, dir, "--sidecar", "http://"+p.api, "--zip", "codes.zip", "--quiet", "codes.csv")
	if res.code != 1 {
		t.Fatalf("--zip: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if got := fake.Calls(wechat.PathUnlimited); got != 497 {
		t.Errorf("--zip made %d upstream calls, want 0", got-497)
	}
	zr, err := zip.OpenReader(filepath.Join(dir, "codes.zip"))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	inZip := 0
	for _, f := range zr.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == "manifest.csv" {
			beside, _ := os.ReadFile(filepath.Join(dir, "codes.zip.manifest.csv"))
			if !bytes.Equal(b, beside) {
				t.Error("the manifest in the zip differs from codes.zip.manifest.csv")
			}
			continue
		}
		onDisk, err := os.ReadFile(filepath.Join(out, f.Name))
		if err != nil || !bytes.Equal(b, onDisk) {
			t.Errorf("%s in the zip differs from --out's (%v)", f.Name, err)
		}
		inZip++
	}
	if inZip != 497 {
		t.Errorf("%d images in the zip, want 497", inZip)
	}

	// only-if-cached: 504 for an uncached code, and no upstream call.
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.api+wechat.PathUnlimited, strings.NewReader(`{"scene":"never-asked"}`))
	req.Header.Set("Cache-Control", "only-if-cached")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(body, []byte(`"errcode":-1`)) {
		t.Errorf("only-if-cached, uncached: %d %s, want 504 errcode -1", resp.StatusCode, body)
	}
	if got := fake.Calls(wechat.PathUnlimited); got != 497 {
		t.Errorf("only-if-cached made %d upstream calls, want 0", got-497)
	}
}

// TestPregenDryRunAsksOnlyTheCache: a dry run counts what is cached and
// what would be generated, and spends nothing.
func TestPregenDryRunAsksOnlyTheCache(t *testing.T) {
	t.Parallel()
	p, fake := startWithFake(t)
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(20, "d"), false)
	if code, _ := get(t, "http://"+p.api+"/qrcode?scene=d-0003&width=280&is_hyaline=false"); code != 200 {
		t.Fatalf("warming one code: %d", code)
	}
	calls := fake.TotalCalls()
	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--dry-run", "codes.csv")
	if res.code != 0 || !strings.Contains(res.stdout, "1 cached by the sidecar, 19 to generate") ||
		!strings.Contains(res.stdout, "19 calls of getwxacodeunlimit") {
		t.Fatalf("dry run: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if got := fake.TotalCalls(); got != calls {
		t.Errorf("dry run made %d upstream calls, want 0", got-calls)
	}
}

// TestPregenWithoutSidecarExits2 sends nothing anywhere else.
func TestPregenWithoutSidecarExits2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(3, "u"), false)
	res := runPregen(t, dir, "--sidecar", "http://"+freePort(t), "--out", "out", "codes.csv")
	if res.code != 2 || !strings.Contains(res.stderr, "no sidecar answering") {
		t.Errorf("exit %d, want 2 and a message\n%s", res.code, res.stderr)
	}
	os.WriteFile(filepath.Join(dir, "typo.csv"), []byte("scene,widht\na,280\n"), 0o644)
	if res := runPregen(t, dir, "--out", "out", "typo.csv"); res.code != 2 || !strings.Contains(res.stderr, `unknown column "widht"`) {
		t.Errorf("unknown column: exit %d, want 2\n%s", res.code, res.stderr)
	}
}

// TestPregenWaitsOutTheSidecarsRateRefusals: the sidecar's own limiter
// answers 45011 with Retry-After; every row still gets its image.
func TestPregenWaitsOutTheSidecarsRateRefusals(t *testing.T) {
	t.Parallel()
	// A burst of 2 for 4 requests at once: each wave, two are refused
	// with Retry-After: 1, and the run pauses a second.
	p, _ := startWithFake(t, "UPSTREAM_LIMITS="+wechat.PathUnlimited+"=3/s:2", "UPSTREAM_MAX_WAIT=0s")
	dir := t.TempDir()
	writeScenes(t, filepath.Join(dir, "codes.csv"), sceneList(8, "r"), false)
	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "--concurrency", "4", "codes.csv")
	if res.code != 0 || !strings.Contains(res.stdout, "8 with their image") {
		t.Fatalf("exit %d, want 0 and every image\n%s%s", res.code, res.stdout, res.stderr)
	}
	_, metrics := get(t, "http://"+p.admin+"/metrics")
	if strings.Contains(string(metrics), `wxa_sidecar_ratelimit_rejections_total{endpoint="`+wechat.PathUnlimited+`"} 0`) {
		t.Error("the sidecar refused nothing: the test paced nothing")
	}
}

// TestPregenWaitsOutWeChatsMinuteQuota: WeChat's own 45011 (no
// Retry-After; the sidecar cools down to the next minute) fails no row.
// It may wait up to a minute, in parallel with the other tests.
func TestPregenWaitsOutWeChatsMinuteQuota(t *testing.T) {
	t.Parallel()
	p, fake := startWithFake(t)
	dir := t.TempDir()
	scenes := sceneList(12, "m")
	writeScenes(t, filepath.Join(dir, "codes.csv"), scenes, false)
	fake.FailNextErrcode(wechat.PathUnlimited, 1, int(wechat.MinuteQuota))
	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "codes.csv")
	if res.code != 0 || !strings.Contains(res.stdout, "12 with their image") {
		t.Fatalf("exit %d, want 0 and every image\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, s := range scenes {
		if img, err := os.ReadFile(filepath.Join(dir, "out", s+".jpg")); err != nil || img[0] != 0xFF {
			t.Errorf("%s.jpg: not a JPEG (%v)", s, err)
		}
	}
	if got := fake.Calls(wechat.PathUnlimited); got != 13 {
		t.Errorf("%d upstream calls, want 13 (one refused, then each code once)", got)
	}
}

// TestPregenResumesAfterSIGKILL: killed midway, run again (against a new
// sidecar with an empty cache, so any repeat would reach WeChat), it
// finishes with no second request for a row the first run finished.
func TestPregenResumesAfterSIGKILL(t *testing.T) {
	t.Parallel()
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	env := []string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
		"WECHAT_API_URL=" + fake.URL}
	p := startSidecar(t, env)
	fake.SetLatency(20 * time.Millisecond)
	dir := t.TempDir()
	scenes := sceneList(120, "k")
	writeScenes(t, filepath.Join(dir, "codes.csv"), scenes, true)
	cmd, _, stderr := pregenCmd(t, context.Background(), dir, "--sidecar", "http://"+p.api, "--out", "out",
		"--concurrency", "2", "codes.csv")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	manifestPath := filepath.Join(dir, "out", "manifest.csv")
	deadline := time.Now().Add(30 * time.Second)
	for okLines(manifestPath) < 30 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no 30 rows done in time\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	finished := map[string]bool{}
	b, _ := os.ReadFile(manifestPath)
	for _, rec := range readManifestLenient(b) {
		if len(rec) == 6 && rec[4] == "ok" {
			finished[strings.TrimSuffix(rec[1], ".png")] = true
		}
	}
	if len(finished) == 0 || len(finished) == len(scenes) {
		t.Fatalf("%d rows finished before SIGKILL: want some, not all", len(finished))
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	fake.SetLatency(0)
	p = startSidecar(t, env)
	res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "codes.csv")
	if res.code != 0 || !strings.Contains(res.stdout, fmt.Sprintf("%d already there", len(finished))) {
		t.Fatalf("rerun: exit %d, want 0 with %d already there\n%s%s", res.code, len(finished), res.stdout, res.stderr)
	}
	perScene := scenesAtFake(t, fake)
	for _, s := range scenes {
		switch {
		case finished[s] && perScene[s] != 1:
			t.Errorf("%s finished before the kill, then asked of WeChat %d times in all, want once", s, perScene[s])
		case perScene[s] == 0:
			t.Errorf("%s never asked of WeChat", s)
		}
		// Decoding is TestPregenFiveHundredCodes's; here, each file is whole.
		if img, err := os.ReadFile(filepath.Join(dir, "out", s+".png")); err != nil || !bytes.HasSuffix(img, []byte("IEND\xAEB`\x82")) {
			t.Errorf("%s.png is not a whole PNG (%v)", s, err)
		}
	}
	if stray, _ := filepath.Glob(filepath.Join(dir, "out", ".pregen-*")); len(stray) > 0 {
		t.Errorf("temporary files left: %v", stray)
	}
}

// TestPregenSIGINTFinishesRowsInFlight: SIGINT stops the run cleanly:
// exit 130, a complete manifest, and the next run finishes.
func TestPregenSIGINTFinishesRowsInFlight(t *testing.T) {
	t.Parallel()
	p, fake := startWithFake(t)
	fake.SetLatency(20 * time.Millisecond)
	dir := t.TempDir()
	scenes := sceneList(100, "i")
	writeScenes(t, filepath.Join(dir, "codes.csv"), scenes, false)
	cmd, stdout, stderr := pregenCmd(t, context.Background(), dir, "--sidecar", "http://"+p.api, "--out", "out",
		"--concurrency", "2", "codes.csv")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	manifestPath := filepath.Join(dir, "out", "manifest.csv")
	deadline := time.Now().Add(30 * time.Second)
	for okLines(manifestPath) < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("pregen did not stop within 30s of SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d, want 130\n%s%s", code, stdout.String(), stderr.String())
	}
	b, _ := os.ReadFile(manifestPath)
	manifest := readManifestFile(t, b)
	if len(manifest) != len(scenes) {
		t.Errorf("manifest has %d lines, want all %d (done or not)", len(manifest), len(scenes))
	}
	for line, rec := range manifest {
		if rec[4] == "ok" {
			if _, err := os.Stat(filepath.Join(dir, "out", rec[1])); err != nil {
				t.Errorf("line %d: ok in the manifest, but %v", line, err)
			}
		} else if rec[4] != "not done" {
			t.Errorf("line %d: result %q", line, rec[4])
		}
	}
	fake.SetLatency(0)
	if res := runPregen(t, dir, "--sidecar", "http://"+p.api, "--out", "out", "codes.csv"); res.code != 0 {
		t.Fatalf("rerun: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if got := fake.Calls(wechat.PathUnlimited); got != len(scenes) {
		t.Errorf("%d upstream calls over both runs, want %d", got, len(scenes))
	}
}

// okLines counts the rows a manifest being written says are done.
func okLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	for _, rec := range readManifestLenient(b) {
		if len(rec) == 6 && rec[4] == "ok" {
			n++
		}
	}
	return n
}

// readManifestLenient reads a manifest that may end in a torn line.
func readManifestLenient(b []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		r := csv.NewReader(strings.NewReader(sc.Text()))
		if rec, err := r.Read(); err == nil {
			out = append(out, rec)
		}
	}
	return out
}

// TestPregenReachesWeChatOnlyThroughASidecar: pregen imports none of the
// sidecar's parts, so it can never hold a token competing with the
// fleet's (docs/design.md's "Code layout"; importRules could carry it too).
func TestPregenReachesWeChatOnlyThroughASidecar(t *testing.T) {
	p, ok := listPackages(t)[module+"/pregen"]
	if !ok {
		t.Fatal("package pregen is missing")
	}
	for _, imp := range p.Imports {
		for _, part := range []string{"proxy", "codes", "upstream", "token", "quota", "cache", "fleet", "config"} {
			if matchesImport(imp, module+"/"+part) {
				t.Errorf("pregen imports %s", imp)
			}
		}
	}
}
