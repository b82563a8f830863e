package pregen

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// TestWindowsReservedStemsGetASuffix: CON, PRN, AUX, NUL, COM1-COM9 and
// LPT1-LPT9 name devices on Windows in any case and before any extension,
// so a zip holding CON.jpg cannot be unpacked there.
func TestWindowsReservedStemsGetASuffix(t *testing.T) {
	for name, want := range map[string]string{
		"CON": "CON_", "con": "con_", "Con.tar": "Con_.tar", "nul.": "nul_.", "PRN": "PRN_", "aux.x.y": "aux_.x.y",
		"COM1": "COM1_", "com9": "com9_", "LPT1": "LPT1_", "lpt9.txt": "lpt9_.txt",
		// Not reserved.
		"COM0": "COM0", "COM10": "COM10", "LPT": "LPT", "CONSOLE": "CONSOLE", "ACON": "ACON", "a.CON": "a.CON",
		"CON_": "CON_", "COMA": "COMA",
	} {
		if got := safeStem(name); got != want {
			t.Errorf("safeStem(%q) = %q, want %q", name, got, want)
		}
	}
	s := newStems()
	for _, tc := range []struct{ name, want string }{{"CON", "CON_"}, {"con_", "con_~2"}, {"Con", "Con_~3"}} {
		if got := s.assign(tc.name); got != tc.want {
			t.Errorf("assign(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func encodeJPEG(t *testing.T) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodePNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, 16, 16))
	img.Set(1, 1, color.Black)
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestOnlyWholeImagesAreImages: magic bytes make no image. The 41-byte
// HTML body with JPEG magic once saved as .jpg is a broken answer, and so
// are truncated images and a header declaring gigapixels.
func TestOnlyWholeImagesAreImages(t *testing.T) {
	jpg, pngImg := encodeJPEG(t), encodePNG(t)
	html := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, "<html><script>alert(1)</script></html>"...)
	if len(html) != 42 {
		t.Logf("html body of %d bytes", len(html))
	}
	huge := bytes.Clone(pngImg)
	// IHDR's width is bytes 16-19: 65000 px.
	huge[16], huge[17], huge[18], huge[19] = 0, 0, 0xFD, 0xE8
	bodies := map[string]struct {
		body   []byte
		broken bool
	}{
		"jpeg": {jpg, false}, "png": {pngImg, false}, "html with JPEG magic": {html, true},
		"truncated jpeg": {jpg[:len(jpg)/2], true}, "truncated png": {pngImg[:len(pngImg)-12], true},
		"huge png": {huge, true},
	}
	for name, tc := range bodies {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/jpeg")
			w.Write(tc.body)
		}))
		c := newClient(srv.URL, wechat.PathUnlimited, 1, 10*time.Second)
		a, err := c.ask(context.Background(), []byte(`{"scene":"a"}`), false)
		srv.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch {
		case tc.broken && (a.image != nil || !a.broken || a.err == nil):
			t.Errorf("%s: image %d bytes, broken %v, want no image and a failed row", name, len(a.image), a.broken)
		case !tc.broken && (a.image == nil || a.broken):
			t.Errorf("%s: not taken as an image (%v)", name, a.err)
		}
	}
}

// TestABrokenImageFailsItsRow: a run whose sidecar answers an HTML page
// with JPEG magic saves nothing, counts the row failed and exits 1.
func TestABrokenImageFailsItsRow(t *testing.T) {
	html := append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, "<html><body>not a code</body></html>\n"...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(html)
	}))
	defer srv.Close()
	dir := t.TempDir()
	in := filepath.Join(dir, "codes.csv")
	os.WriteFile(in, []byte("scene\na\nb\n"), 0o644)
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), Options{Input: in, Out: filepath.Join(dir, "out"), Sidecar: srv.URL,
		Stdout: &stdout, Stderr: &stderr, Progress: ProgressNone})
	if code != ExitFailed || !strings.Contains(stdout.String(), "0 with their image") ||
		!strings.Contains(stdout.String(), "2 failed") {
		t.Errorf("exit %d, want 1 with 2 failed rows\n%s%s", code, stdout.String(), stderr.String())
	}
	if imgs, _ := filepath.Glob(filepath.Join(dir, "out", "*.jpg")); len(imgs) > 0 {
		t.Errorf("saved %v", imgs)
	}
	m, _ := os.ReadFile(filepath.Join(dir, "out", "manifest.csv"))
	if !strings.Contains(string(m), "not a whole .jpg") {
		t.Errorf("manifest does not say why:\n%s", m)
	}
}

// TestSidecarPasswordIsNeverPrinted: --sidecar may carry credentials for a
// proxy in front of it; every message shows the URL redacted.
func TestSidecarPasswordIsNeverPrinted(t *testing.T) {
	const secret = "s3cr3t-pw"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there now
	dir := t.TempDir()
	in := filepath.Join(dir, "codes.csv")
	os.WriteFile(in, []byte("scene\na\n"), 0o644)
	for _, sidecar := range []string{"http://user:" + secret + "@" + addr, "ftp://user:" + secret + "@" + addr,
		"http://user:" + secret + "@" + addr + ":x:y"} {
		for _, dry := range []bool{false, true} {
			var stdout, stderr bytes.Buffer
			o := Options{Input: in, Sidecar: sidecar, DryRun: dry, Stdout: &stdout, Stderr: &stderr, Progress: ProgressNone}
			if !dry {
				o.Out = filepath.Join(dir, "out")
			}
			if code := Run(context.Background(), o); code != ExitUsage {
				t.Errorf("%s: exit %d, want 2", sidecar, code)
			}
			out := stdout.String() + stderr.String()
			if strings.Contains(out, secret) {
				t.Errorf("the password is printed:\n%s", out)
			}
			if strings.Count(out, "pregen:") != strings.Count(out, "\n") || strings.Contains(out, ": pregen:") {
				t.Errorf("want one pregen: prefix a line:\n%s", out)
			}
		}
	}
	if got := redactURL("http://u:" + secret + "@h/p"); got != "http://u:xxxxx@h/p" {
		t.Errorf("redactURL = %q", got)
	}
}

// TestManifestNamesItsHashAndReadsTheOldHeader: the column holding the
// request's sha256 says so; a manifest written before, whose column was
// named request, resumes as before.
func TestManifestNamesItsHashAndReadsTheOldHeader(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "manifest.csv")
	m, err := createManifest(path, []entry{{line: 2, file: "a.png", sha256: "ab", bytes: 3, result: resultOK, requestSHA256: "cd"}})
	if err != nil {
		t.Fatal(err)
	}
	m.close()
	b, _ := os.ReadFile(path)
	if first, _, _ := strings.Cut(string(b), "\n"); first != "line,file,sha256,bytes,result,request_sha256" {
		t.Errorf("header %q", first)
	}
	for name, text := range map[string]string{
		"old":       "line,file,sha256,bytes,result,request\n2,a.png,ab,3,ok,cd\n",
		"new":       string(b),
		"reordered": "request_sha256,line,result,bytes,sha256,file\ncd,2,ok,3,ab,a.png\n",
	} {
		os.WriteFile(path, []byte(text), 0o644)
		got, err := readManifest(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := (entry{line: 2, file: "a.png", sha256: "ab", bytes: 3, result: resultOK, requestSHA256: "cd"}); got[2] != want {
			t.Errorf("%s: read %+v, want %+v", name, got[2], want)
		}
	}
	os.WriteFile(path, []byte("who,knows\n2,x\n"), 0o644)
	if got, err := readManifest(path); err != nil || len(got) != 0 {
		t.Errorf("unknown header: %v %v, want an empty manifest", got, err)
	}
}

// TestRateNeverShowsTheFirstCodesSpike: the first code finishing 3.5 µs
// after the start is no rate (282406 codes/s was shown); the rate is a
// moving average that follows a pause.
func TestRateNeverShowsTheFirstCodesSpike(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := newRateMeter(t0)
	m.add(t0.Add(3500*time.Nanosecond), 1)
	if r, ok := m.rate(t0.Add(3500 * time.Nanosecond)); ok {
		t.Errorf("rate %v after 3.5µs, want none shown", r)
	}
	if r, ok := m.rate(t0.Add(999 * time.Millisecond)); ok {
		t.Errorf("rate %v before a second, want none shown", r)
	}
	// 5 codes a second for 20 s.
	count := 1
	for i := 1; i <= 100; i++ {
		count++
		m.add(t0.Add(time.Duration(i)*200*time.Millisecond), count)
	}
	if r, ok := m.rate(t0.Add(20 * time.Second)); !ok || r < 4.9 || r > 5.1 {
		t.Errorf("rate %v (%v) at a steady 5 a second", r, ok)
	}
	// A pause: the rate falls to nothing within the window.
	if r, _ := m.rate(t0.Add(25 * time.Second)); r < 2 || r > 3 {
		t.Errorf("rate %v 5s into a pause, want about 2.5", r)
	}
	if r, _ := m.rate(t0.Add(31 * time.Second)); r != 0 {
		t.Errorf("rate %v 11s into a pause, want 0", r)
	}
	// Every other sample is at least rateStep from the one before.
	if len(m.samples) > 2*int(rateWindow/rateStep)+2 {
		t.Errorf("%d samples kept", len(m.samples))
	}
}

var rateShown = regexp.MustCompile(`([0-9.]+) codes/s`)

// TestProgressSpeaksTheSummarysWords: the bar and the lines say invalid
// rows and failed requests apart, as the summary does, and never show a
// rate before one can be told.
func TestProgressSpeaksTheSummarysWords(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	var out bytes.Buffer
	r := &runner{Options: Options{Progress: ProgressBar, Now: clock, ProgressEvery: time.Hour}, stderr: &out}
	p := r.newProgress(20, 2, 0)
	now = now.Add(3500 * time.Nanosecond)
	p.done(false)
	now = now.Add(100 * time.Millisecond)
	p.done(true)
	if m := rateShown.FindAllStringSubmatch(out.String(), -1); len(m) > 0 {
		t.Errorf("the bar shows %v within 0.1s of the start, want no rate yet:\n%q", m, out.String())
	}
	now = now.Add(2 * time.Second)
	time.Sleep(150 * time.Millisecond) // past the bar's throttle
	p.done(false)
	p.stop()
	text := out.String()
	if !strings.Contains(text, "2 invalid, 1 failed, 1.4 codes/s") || strings.Contains(text, "3 failed") {
		t.Errorf("bar: want 2 invalid, 1 failed:\n%q", text)
	}
	for _, m := range rateShown.FindAllStringSubmatch(text, -1) {
		if r, _ := strconv.ParseFloat(m[1], 64); r > 3/2.1+0.05 {
			t.Errorf("the bar shows %s codes/s, more than the 3 codes in 2.1s", m[1])
		}
	}

	out.Reset()
	r.Progress = ProgressLines
	l := r.newProgress(20, 2, 1).(*lines)
	l.done(false)
	l.print()
	if got := out.String(); got != "pregen: 1/20 done, 2 invalid, 1 failed\n" {
		t.Errorf("line %q", got)
	}
	out.Reset()
	now = now.Add(4 * time.Second)
	l.print()
	l.stop()
	if got := out.String(); got != "pregen: 1/20 done, 2 invalid, 1 failed, 0.2 codes/s, ETA 1m16s\n" {
		t.Errorf("line %q", got)
	}
}

// TestEstimateComesFromTheSidecarsLimits: how long a run takes at least,
// from the limit and cool-down the sidecar enforces.
func TestEstimateComesFromTheSidecarsLimits(t *testing.T) {
	for _, tc := range []struct {
		n        int
		endpoint string
		lim      endpointLimit
		want     time.Duration
	}{
		{19, wechat.PathUnlimited, endpointLimit{RatePerSecond: 82.5, Burst: 50}, 0},
		{20, wechat.PathUnlimited, endpointLimit{RatePerSecond: 2, Burst: 3}, 8500 * time.Millisecond},
		{20, wechat.PathUnlimited, endpointLimit{RatePerSecond: 2, Burst: 3, CooldownLeft: 30 * time.Second}, 38500 * time.Millisecond},
		{12000, wechat.PathUnlimited, endpointLimit{}, 2 * time.Minute},
		{12000, wechat.PathWxacode, endpointLimit{}, 0},
		{1000, wechat.PathQRCode, endpointLimit{RatePerSecond: 10, Burst: 100}, 90 * time.Second},
	} {
		if got := duration(tc.n, tc.endpoint, &tc.lim); got != tc.want {
			t.Errorf("%d calls at %+v: %v, want %v", tc.n, tc.lim, got, tc.want)
		}
	}
	got := estimate(20, wechat.PathUnlimited, &endpointLimit{RatePerSecond: 2, Burst: 3, Shared: true}, nil)
	if want := "would take at least 9s (the sidecar lets 2 calls a second to getwxacodeunlimit through, 3 at once, for the whole fleet)"; got != want {
		t.Errorf("estimate %q, want %q", got, want)
	}
	got = estimate(5, wechat.PathUnlimited, &endpointLimit{RatePerSecond: 82.5, Burst: 50}, nil)
	if !strings.HasPrefix(got, "would take less than a second") {
		t.Errorf("estimate %q", got)
	}
}

// TestLimitsForReadsTheSidecarsAnswer: the dry run's client reads the
// answer of GET /wxa-sidecar/limits, and refuses to guess between apps.
func TestLimitsForReadsTheSidecarsAnswer(t *testing.T) {
	answer := `{"shared":true,"fleet_size":2,"max_wait_seconds":2,"limits":[{"app":"wx1","endpoint":"/wxa/getwxacodeunlimit","rate_per_second":2,"burst":3,"cooldown":{"errcode":45011,"until":"2026-01-02T03:05:00Z","seconds_left":12.5}}]}`
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.Method + " " + r.URL.RequestURI()
		if strings.HasPrefix(r.URL.Path, "/apps/") {
			w.Write([]byte(answer))
			return
		}
		w.Write([]byte(strings.Replace(answer, `]}`, `,{"app":"wx2","endpoint":"/wxa/getwxacodeunlimit","unlimited":true}]}`, 1)))
	}))
	defer srv.Close()
	lim, err := newClient(srv.URL+"/apps/wx1", wechat.PathUnlimited, 1, 10*time.Second).limitsFor(context.Background(), wechat.PathUnlimited)
	if err != nil {
		t.Fatal(err)
	}
	if want := (endpointLimit{Shared: true, RatePerSecond: 2, Burst: 3, CooldownCode: 45011, CooldownLeft: 12500 * time.Millisecond}); *lim != want {
		t.Errorf("limits %+v, want %+v", *lim, want)
	}
	if want := "GET /apps/wx1/wxa-sidecar/limits?endpoint=%2Fwxa%2Fgetwxacodeunlimit"; asked != want {
		t.Errorf("asked %q, want %q", asked, want)
	}
	if _, err := newClient(srv.URL, wechat.PathUnlimited, 1, 10*time.Second).limitsFor(context.Background(), wechat.PathUnlimited); err == nil || !strings.Contains(err.Error(), "several apps") {
		t.Errorf("two apps: %v, want an error naming them", err)
	}
}
