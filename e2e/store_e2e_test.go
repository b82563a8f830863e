package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/s3test"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// The durable store with real processes: the binary, the fake
// WeChat, a directory or a real S3-compatible server (versitygw).

const csStoreHit = "wxa-sidecar; hit; detail=store"

// storeRig is replicas of the binary sharing one fake and one store, no
// Redis.
func storeRig(t *testing.T, env ...string) *fleetRig {
	t.Helper()
	fake := newFleetFake(t, wechattest.Options{})
	return &fleetRig{
		fake: fake,
		env: append([]string{"WECHAT_APP_ID=" + wechattest.DemoAppID, "WECHAT_APP_SECRET=" + wechattest.DemoSecret,
			"WECHAT_API_URL=" + fake.URL, "SHUTDOWN_TIMEOUT=10s"}, env...),
		client: &http.Client{Timeout: 30 * time.Second},
	}
}

// awaitMetric polls p's /metrics until the sum of name{labels} satisfies
// ok, for at most 15 s.
func awaitMetric(t *testing.T, p *sidecarProcess, what string, ok func(float64) bool, name string, labels ...string) float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, body := scrapeFleetMetrics(t, p)
		v, found := m.sum(name, labels...)
		if found && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s%v is %s\n%s", what, name, labels, sampleString(v, found), grepLines(body, "wxa_sidecar_store"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func grepLines(text, substr string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, substr) && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }

// stop sends SIGTERM and waits for a clean exit.
func stop(t *testing.T, p *sidecarProcess) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr.String())
	}
}

// storeFiles lists the objects of a file:// store (temporary files apart).
func storeFiles(t *testing.T, root string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".tmp-") {
			files[p] = true
		}
		return nil
	})
	return files
}

// newFile asks scene of p and returns the object its image became.
func newFile(t *testing.T, rig *fleetRig, p *sidecarProcess, root, scene string) (string, []byte) {
	t.Helper()
	before := storeFiles(t, root)
	a := rig.ask(p, scene)
	if !a.image() || a.cacheStatus != csStored {
		t.Fatalf("%s: %s", scene, a)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		for f := range storeFiles(t, root) {
			if !before[f] {
				return f, a.body
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was never written to the store", scene)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStoreFileRestartCostsNoUpstreamCall: a code fetched, the sidecar
// restarted (SIGTERM right after the answer: the queue is flushed in the
// exit bound), the same code asked: a store hit, 0 upstream calls, the
// same bytes and headers.
func TestStoreFileRestartCostsNoUpstreamCall(t *testing.T) {
	root := t.TempDir()
	rig := storeRig(t, "STORE_URL=file://"+root)
	first := rig.add(t)
	a := rig.ask(first, "durable")
	if !a.image() || a.cacheStatus != csStored {
		t.Fatalf("first ask: %s", a)
	}
	stop(t, first)
	calls := rig.fake.Calls(fleetCodePath)

	second := rig.add(t)
	b := rig.ask(second, "durable")
	if !b.image() || b.cacheStatus != csStoreHit || !bytes.Equal(a.body, b.body) {
		t.Fatalf("after the restart: %s, want the same image with Cache-Status %q", b, csStoreHit)
	}
	if got := rig.fake.Calls(fleetCodePath) - calls; got != 0 {
		t.Errorf("%d upstream calls after the restart, want 0", got)
	}
	c := rig.ask(second, "durable")
	if c.cacheStatus != csHit {
		t.Errorf("third ask: Cache-Status %q, want %q (L1 filled by the store hit)", c.cacheStatus, csHit)
	}
	m, _ := scrapeFleetMetrics(t, second)
	if v, _ := m.sum("wxa_sidecar_cache_requests_total", `result="store_hit"`); v != 1 {
		t.Errorf("cache_requests_total{result=\"store_hit\"} = %v, want 1", v)
	}
	if v, _ := m.sum("wxa_sidecar_store_up"); v != 1 {
		t.Errorf("store_up = %v, want 1", v)
	}
	_, body := get(t, "http://"+second.admin+"/status")
	var status struct {
		Store *struct {
			URL     string `json:"url"`
			Up      bool   `json:"up"`
			KeyFrom string `json:"key_from"`
		} `json:"store"`
	}
	if json.Unmarshal(body, &status); status.Store == nil || status.Store.URL != "file://"+root || !status.Store.Up ||
		status.Store.KeyFrom != "app_secret" {
		t.Errorf("/status store: %s", body)
	}
}

// TestStoreFileTruncatedOrSwappedIsRefetched: an object truncated, or
// replaced with another key's, is a miss: the code is fetched again and
// the right image served, never the other's; the object is rewritten.
func TestStoreFileTruncatedOrSwappedIsRefetched(t *testing.T) {
	root := t.TempDir()
	rig := storeRig(t, "STORE_URL=file://"+root)
	p := rig.add(t)
	fileA, imgA := newFile(t, rig, p, root, "swap-a")
	fileB, imgB := newFile(t, rig, p, root, "swap-b")
	fileC, imgC := newFile(t, rig, p, root, "swap-c")
	stop(t, p)
	if bytes.Equal(imgA, imgB) {
		t.Fatal("the fake drew the same image for two scenes")
	}
	objA, err := os.ReadFile(fileA)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(fileB, objA, 0o600) // B's place holds A's object
	objC, _ := os.ReadFile(fileC)
	os.WriteFile(fileC, objC[:len(objC)/2], 0o600) // C's is cut short

	p = rig.add(t)
	calls := rig.fake.Calls(fleetCodePath)
	for _, c := range []struct {
		scene string
		want  []byte
	}{{"swap-b", imgB}, {"swap-c", imgC}} {
		a := rig.ask(p, c.scene)
		if !a.image() || a.cacheStatus != csStored {
			t.Errorf("%s: %s, want a refetch", c.scene, a)
		}
		if bytes.Equal(a.body, imgA) || !bytes.Equal(a.body, c.want) {
			t.Errorf("%s: served other bytes than its own image", c.scene)
		}
	}
	if got := rig.fake.Calls(fleetCodePath) - calls; got != 2 {
		t.Errorf("%d upstream calls, want 2 (one refetch each)", got)
	}
	if a := rig.ask(p, "swap-a"); a.cacheStatus != csStoreHit || !bytes.Equal(a.body, imgA) {
		t.Errorf("swap-a, untouched: %s", a)
	}
	awaitMetric(t, p, "two corrupt objects", func(v float64) bool { return v == 2 },
		"wxa_sidecar_store_requests_total", `op="get"`, `result="corrupt"`)
	awaitMetric(t, p, "the refetched images rewritten", atLeast(2),
		"wxa_sidecar_store_requests_total", `op="put"`, `result="ok"`)
	stop(t, p)
	p = rig.add(t)
	for _, scene := range []string{"swap-b", "swap-c"} {
		if a := rig.ask(p, scene); a.cacheStatus != csStoreHit {
			t.Errorf("%s after its rewrite and a restart: %s", scene, a)
		}
	}
}

// TestStoreFilePruningKeepsTheBound: with STORE_MAX_BYTES far under what
// is asked, the directory is brought back under its bound.
func TestStoreFilePruningKeepsTheBound(t *testing.T) {
	root := t.TempDir()
	rig := storeRig(t, "STORE_URL=file://"+root)
	probe := rig.add(t)
	_, img := newFile(t, rig, probe, root, "prune-probe")
	stop(t, probe)
	// Room for about ten images.
	bound := int64(len(img)+200) * 10
	os.RemoveAll(root)
	rig.env = append(rig.env, fmt.Sprint("STORE_MAX_BYTES=", bound))
	p := rig.add(t)
	const n = 40
	for i := range n {
		if a := rig.ask(p, fmt.Sprint("prune-", i)); !a.image() {
			t.Fatalf("prune-%d: %s", i, a)
		}
	}
	awaitMetric(t, p, "every write made", atLeast(n), "wxa_sidecar_store_requests_total", `op="put"`, `result="ok"`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var total int64
		for f := range storeFiles(t, root) {
			if info, err := os.Stat(f); err == nil {
				total += info.Size()
			}
		}
		if total <= bound {
			if total == 0 {
				t.Error("the pruning emptied the store")
			}
			t.Logf("%d images of ~%d bytes: %d bytes kept, bound %d", n, len(img), total, bound)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the directory holds %d bytes, over STORE_MAX_BYTES=%d", total, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStoreFileKill9DuringWritesLeavesNothingReadAsValid: a sidecar killed
// while it writes leaves temporary files and whole objects, never a half
// one read as an image: after a restart every code is its own image.
func TestStoreFileKill9DuringWritesLeavesNothingReadAsValid(t *testing.T) {
	root := t.TempDir()
	rig := storeRig(t, "STORE_URL=file://"+root, "UPSTREAM_RPS=10000", "UPSTREAM_BURST=1000")
	rig.client.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	p := rig.add(t)
	const n = 48
	scenes := make([]string, n)
	for i := range n {
		scenes[i] = fmt.Sprint("kill-", i)
	}
	var wg sync.WaitGroup
	next := make(chan string)
	for range 8 {
		wg.Go(func() {
			for s := range next {
				rig.ask(p, s)
			}
		})
	}
	killed := false
	for i, s := range scenes {
		next <- s
		if !killed && i == n/2 {
			// Mid-run, with writes queued and in flight.
			p.cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	close(next)
	wg.Wait()
	p.cmd.Wait()
	written := len(storeFiles(t, root))
	t.Logf("%d objects written before the kill", written)

	// The truth: a sidecar without a store, against the same fake.
	ref := startSidecar(t, slices.DeleteFunc(slices.Clone(rig.env), func(kv string) bool {
		return strings.HasPrefix(kv, "STORE_URL=")
	}))
	p = rig.add(t)
	hits := 0
	for _, s := range scenes {
		got := rig.ask(p, s)
		if !got.image() {
			t.Fatalf("%s: restarted %s", s, got)
		}
		if got.cacheStatus != csStoreHit {
			continue // fetched from the fake just now
		}
		want := rig.ask(ref, s)
		if !want.image() {
			t.Fatalf("%s: reference %s", s, want)
		}
		if !bytes.Equal(want.body, got.body) {
			t.Fatalf("%s: the restarted sidecar served other bytes than the code's image (Cache-Status %q)", s, got.cacheStatus)
		}
		hits++
	}
	if hits == 0 && written > 0 {
		t.Errorf("none of the %d objects written before the kill was a store hit", written)
	}
	t.Logf("%d store hits of %d codes after the kill", hits, n)
}

// s3Env is the environment of a replica on bucket "codes" of srv.
func s3Env(t *testing.T, endpoint string) []string {
	access, secret := s3test.CredentialFiles(t)
	return []string{"STORE_URL=s3://codes/wxa", "STORE_ENDPOINT=" + endpoint, "STORE_REGION=us-east-1",
		"STORE_ACCESS_KEY_FILE=" + access, "STORE_SECRET_KEY_FILE=" + secret}
}

// TestStoreS3TwoReplicasShareWithoutRedis: a code fetched by one replica
// is a store hit on the other, with no Redis between them.
func TestStoreS3TwoReplicasShareWithoutRedis(t *testing.T) {
	srv := s3test.Start(t)
	srv.MakeBucket(t, "codes")
	rig := storeRig(t, s3Env(t, srv.Endpoint)...)
	one, two := rig.add(t), rig.add(t)
	a := rig.ask(one, "s3-shared")
	if !a.image() || a.cacheStatus != csStored {
		t.Fatalf("replica one: %s", a)
	}
	awaitMetric(t, one, "the write", atLeast(1), "wxa_sidecar_store_requests_total", `op="put"`, `result="ok"`)
	calls := rig.fake.Calls(fleetCodePath)
	b := rig.ask(two, "s3-shared")
	if !b.image() || b.cacheStatus != csStoreHit || !bytes.Equal(a.body, b.body) || b.contentType != a.contentType {
		t.Fatalf("replica two: %s, want the same image as a store hit", b)
	}
	if got := rig.fake.Calls(fleetCodePath) - calls; got != 0 {
		t.Errorf("%d upstream calls for replica two, want 0", got)
	}
	// The object is sealed: the image's bytes are nowhere in the bucket.
	obj := findFile(t, srv.Dir, "codes")
	if bytes.Contains(obj, a.body[:64]) {
		t.Error("the bucket holds the image in clear")
	}
	_, body := get(t, "http://"+two.admin+"/status")
	for _, secret := range []string{s3test.AccessKey, s3test.SecretKey, wechattest.DemoSecret} {
		if bytes.Contains(body, []byte(secret)) || strings.Contains(two.stderr.String(), secret) {
			t.Errorf("/status or the log carries a credential")
		}
	}
	if !bytes.Contains(body, []byte(`"url": "s3://codes/wxa"`)) {
		t.Errorf("/status does not show the store:\n%s", body)
	}
}

// findFile returns the first regular file under dir/sub.
func findFile(t *testing.T, dir, sub string) []byte {
	t.Helper()
	var found []byte
	filepath.WalkDir(filepath.Join(dir, sub), func(p string, e fs.DirEntry, err error) error {
		if err == nil && found == nil && e.Type().IsRegular() {
			found, _ = os.ReadFile(p)
		}
		return nil
	})
	if found == nil {
		t.Fatal("no object in the bucket")
	}
	return found
}

// requestBound is what one code request may take against the fake with a
// store that is down or silent: STORE_TIMEOUT (500ms), the fetch, and a
// busy 2-CPU machine's slack.
const requestBound = 3 * time.Second

// askTimed asks scene of p, failing unless an image comes within the bound.
func askTimed(t *testing.T, rig *fleetRig, p *sidecarProcess, scene string) codeAnswer {
	t.Helper()
	start := time.Now()
	a := rig.ask(p, scene)
	if d := time.Since(start); !a.image() || d > requestBound {
		t.Fatalf("%s: %s after %s; want an image within %s", scene, a, d, requestBound)
	}
	return a
}

// TestStoreS3DownThenBack: the server killed, every request is still
// served within the bound and store_up drops to 0; the server back on the
// same port, the store is used again within 12 s.
func TestStoreS3DownThenBack(t *testing.T) {
	srv := s3test.Start(t)
	srv.MakeBucket(t, "codes")
	rig := storeRig(t, s3Env(t, srv.Endpoint)...)
	p := rig.add(t)
	askTimed(t, rig, p, "before")
	awaitMetric(t, p, "the write", atLeast(1), "wxa_sidecar_store_requests_total", `op="put"`, `result="ok"`)

	srv.Stop()
	for i := range 10 {
		askTimed(t, rig, p, fmt.Sprint("down-", i))
	}
	awaitMetric(t, p, "store_up with the server killed", func(v float64) bool { return v == 0 }, "wxa_sidecar_store_up")

	srv.Restart(t)
	back := time.Now()
	for i := 0; ; i++ {
		askTimed(t, rig, p, fmt.Sprint("back-", i))
		m, _ := scrapeFleetMetrics(t, p)
		if up, _ := m.sum("wxa_sidecar_store_up"); up == 1 {
			t.Logf("the store in use again %s after the server came back", time.Since(back).Round(10*time.Millisecond))
			break
		}
		if time.Since(back) > 12*time.Second {
			t.Fatalf("store_up still 0 %s after the server came back", time.Since(back))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Used, not just up: a code written now is a store hit elsewhere.
	puts := awaitMetric(t, p, "puts", atLeast(1), "wxa_sidecar_store_requests_total", `op="put"`, `result="ok"`)
	askTimed(t, rig, p, "after")
	awaitMetric(t, p, "a write after the return", atLeast(puts+1), "wxa_sidecar_store_requests_total", `op="put"`, `result="ok"`)
	other := rig.add(t)
	if a := askTimed(t, rig, other, "after"); a.cacheStatus != csStoreHit {
		t.Errorf("a new replica: Cache-Status %q, want %q", a.cacheStatus, csStoreHit)
	}
}

// TestStoreS3SilentServer: an endpoint that accepts connections and never
// answers: the sidecar starts, and every request is answered within the
// bound.
func TestStoreS3SilentServer(t *testing.T) {
	rig := storeRig(t, s3Env(t, "http://"+redistest.SilentAddr(t))...)
	p := rig.add(t) // ready: it started
	for i := range 12 {
		askTimed(t, rig, p, fmt.Sprint("silent-", i))
	}
	awaitMetric(t, p, "timeouts counted", atLeast(1), "wxa_sidecar_store_requests_total", `result="timeout"`)
	awaitMetric(t, p, "store_up", func(v float64) bool { return v == 0 }, "wxa_sidecar_store_up")
}

// TestStoreS3MissingBucketIsOneErrorLine: a bucket that does not exist is
// one ERROR line naming STORE_URL and store_up 0; the sidecar serves.
func TestStoreS3MissingBucketIsOneErrorLine(t *testing.T) {
	srv := s3test.Start(t)
	rig := storeRig(t, s3Env(t, srv.Endpoint)...)
	p := rig.add(t)
	askTimed(t, rig, p, "no-bucket")
	awaitMetric(t, p, "store_up", func(v float64) bool { return v == 0 }, "wxa_sidecar_store_up")
	var errs []string
	for line := range strings.SplitSeq(p.stderr.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			errs = append(errs, line)
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "STORE_URL") || !strings.Contains(errs[0], "codes") {
		t.Errorf("ERROR lines %q, want one naming STORE_URL and the bucket", errs)
	}
	if slices.ContainsFunc(errs, func(l string) bool { return strings.Contains(l, s3test.SecretKey) }) {
		t.Error("the ERROR line carries the secret key")
	}
}

// TestStoreKeepsLinksKeptForLife: a permanent short link (one of the app's
// 100 000 for life) is written to the store; after a restart it is read
// back, not made again. A temporary one, which expires, never goes there.
func TestStoreKeepsLinksKeptForLife(t *testing.T) {
	root := t.TempDir()
	rig := storeRig(t, "STORE_URL=file://"+root)
	first := rig.add(t)
	const permanent = `{"page_url":"pages/index/index?id=life","is_permanent":true}`
	const temporary = `{"page_url":"pages/index/index?id=month"}`
	a := mustLink(t, first, shortLinkPath, permanent)
	mustLink(t, first, shortLinkPath, temporary)
	stop(t, first)
	calls := rig.fake.Calls(shortLinkPath)

	second := rig.add(t)
	b := mustLink(t, second, shortLinkPath, permanent)
	if b.link != a.link || b.cacheStatus != csStoreHit {
		t.Fatalf("after the restart: %v, want the same link with Cache-Status %q", b, csStoreHit)
	}
	if got := rig.fake.Calls(shortLinkPath) - calls; got != 0 {
		t.Errorf("%d upstream calls for the permanent link after the restart, want 0", got)
	}
	mustLink(t, second, shortLinkPath, temporary)
	if got := rig.fake.Calls(shortLinkPath) - calls; got != 1 {
		t.Errorf("%d upstream calls for the temporary link after the restart, want 1 (never kept in the store)", got)
	}
	m, _ := scrapeFleetMetrics(t, second)
	if v, _ := m.sum("wxa_sidecar_link_requests_total", `endpoint="`+shortLinkPath+`"`, `result="store_hit"`); v != 1 {
		t.Errorf("link_requests_total{result=\"store_hit\"} = %v, want 1", v)
	}
}
