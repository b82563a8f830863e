package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func startWithFake(t *testing.T, env ...string) (*sidecarProcess, *wechattest.Server) {
	fake := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(fake.Close)
	p := startSidecar(t, append([]string{"WECHAT_APP_ID=" + wechattest.DemoAppID,
		"WECHAT_APP_SECRET=" + wechattest.DemoSecret, "WECHAT_API_URL=" + fake.URL}, env...))
	return p, fake
}

func TestAdminEndpoints(t *testing.T) {
	qrcodeAddr := freePort(t)
	p, _ := startWithFake(t, "QRCODE_ADDR="+qrcodeAddr)
	if code, _ := get(t, "http://"+p.admin+"/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := get(t, "http://"+p.admin+"/readyz"); code != 200 {
		t.Errorf("/readyz %d", code)
	}
	if code, _ := get(t, "http://"+p.api+"/healthz"); code == 200 {
		t.Error("/healthz answered on the API port")
	}
	code, img := get(t, "http://"+qrcodeAddr+"/qrcode?scene=admin-test")
	if code != 200 || len(img) < 100 {
		t.Fatalf("QRCODE_ADDR /qrcode: %d", code)
	}
	if code, _ := get(t, "http://"+qrcodeAddr+"/cgi-bin/getcallbackip"); code != 404 {
		t.Errorf("QRCODE_ADDR forwarded an API call: %d", code)
	}
	_, tokBody := get(t, "http://"+p.api+"/cgi-bin/token?grant_type=client_credential&appid="+wechattest.DemoAppID+"&secret="+wechattest.DemoSecret)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal(tokBody, &tok)
	if tok.AccessToken == "" {
		t.Fatalf("no token: %s", tokBody)
	}
	code, status := get(t, "http://"+p.admin+"/status")
	var s struct {
		Apps []struct {
			App              string  `json:"app"`
			HasToken         bool    `json:"has_token"`
			ExpiresInSeconds float64 `json:"expires_in_seconds"`
		} `json:"apps"`
		Cache struct {
			Entries int64 `json:"entries"`
		} `json:"cache"`
		Limits []struct {
			Endpoint string `json:"endpoint"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(status, &s); code != 200 || err != nil {
		t.Fatalf("/status %d: %v\n%s", code, err, status)
	}
	if len(s.Apps) != 1 || !s.Apps[0].HasToken || s.Apps[0].ExpiresInSeconds < 7000 || s.Cache.Entries != 1 || len(s.Limits) == 0 {
		t.Errorf("/status lacks the token state, cache or limits:\n%s", status)
	}
	_, metrics := get(t, "http://"+p.admin+"/metrics")
	for _, name := range []string{`wxa_sidecar_requests_total{code="200",route="qrcode"} 1`, "wxa_sidecar_cache_entries 1",
		"wxa_sidecar_cache_stored_total 1", `wxa_sidecar_token_fetches_total{app="` + wechattest.DemoAppID + `",result="ok"} 1`,
		`wxa_sidecar_upstream_requests_total{endpoint="/wxa/getwxacodeunlimit",outcome="ok"} 1`,
		`wxa_sidecar_token_expiry_seconds{app="` + wechattest.DemoAppID + `"}`} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for name, body := range map[string][]byte{"/status": status, "/metrics": metrics, "logs": []byte(p.stderr.String())} {
		if strings.Contains(string(body), tok.AccessToken) || strings.Contains(string(body), wechattest.DemoSecret) {
			t.Errorf("%s carries the token or the secret", name)
		}
	}
}

func TestOversizedImagesAreRejectedAndCounted(t *testing.T) {
	// A 40 KB cache keeps nothing over 10 KB: every image is declined.
	p, _ := startWithFake(t, "CACHE_MAX_BYTES=40000")
	for range 2 {
		if code, _ := get(t, "http://"+p.api+"/qrcode?scene=big"); code != 200 {
			t.Fatalf("/qrcode %d", code)
		}
	}
	_, metrics := get(t, "http://"+p.admin+"/metrics")
	for _, want := range []string{"wxa_sidecar_cache_rejected_total 2", "wxa_sidecar_cache_stored_total 0",
		`wxa_sidecar_cache_requests_total{result="miss"} 2`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestPrometheusScrapesTheSidecar has a real Prometheus server scrape the
// admin port on loopback and query the request counter.
func TestPrometheusScrapesTheSidecar(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is not installed; .ci/run installs it")
		}
		t.Skip("prometheus not installed (apt-get download prometheus; dpkg -x)")
	}
	p, _ := startWithFake(t)
	if code, _ := get(t, "http://"+p.api+"/qrcode?scene=scraped"); code != 200 {
		t.Fatalf("/qrcode %d", code)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wxa-sidecar\n    static_configs:\n      - targets: ['%s']\n", p.admin)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)
	web := freePort(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	var logs wechattest.LogBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	query := "http://" + web + "/api/v1/query?query=" + url.QueryEscape(`wxa_sidecar_requests_total{route="qrcode",code="200"}`)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(query)
		if err == nil {
			var ans struct {
				Status string `json:"status"`
				Data   struct {
					Result []struct {
						Value []any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if ans.Status == "success" && len(ans.Data.Result) == 1 && len(ans.Data.Result[0].Value) == 2 && ans.Data.Result[0].Value[1] == "1" {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("Prometheus never returned the request counter\n%s", logs.String())
}
