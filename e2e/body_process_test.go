package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue reads one unlabelled sample from the sidecar's /metrics.
func metricValue(t *testing.T, p *sidecarProcess, name string) float64 {
	t.Helper()
	code, body := get(t, "http://"+p.admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// stallBody opens a connection to the API port and sends a request that
// declares declared bytes of body but sends only sent of them.
func stallBody(t *testing.T, addr, path string, declared int, sent string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		path, addr, declared, sent)
	return conn
}

// A body is held as it arrives: connections that declare megabytes and
// send ten bytes cost what they sent, not what they declared.
func TestDeclaredButUnsentBodiesHoldNoMemory(t *testing.T) {
	const conns, declared = 40, 4 << 20
	p, _ := startWithFake(t, "MAX_BODY_BYTES=8388608")
	// The token first, so what follows is the bodies alone.
	if code, body := get(t, "http://"+p.api+"/cgi-bin/getcallbackip"); code != http.StatusOK {
		t.Fatalf("warm-up: %d %s", code, body)
	}
	before := metricValue(t, p, "go_memstats_heap_inuse_bytes")
	for range conns {
		stallBody(t, p.api, "/wxa/msg_sec_check", declared, `{"content"`)
	}
	// The sidecar still answers, and has had time to start reading every
	// stalled body; the heap is looked at for a while, its peak kept.
	if code, _ := get(t, "http://"+p.api+"/cgi-bin/getcallbackip"); code != http.StatusOK {
		t.Fatalf("the sidecar stopped answering: %d", code)
	}
	var peak float64
	for range 10 {
		peak = max(peak, metricValue(t, p, "go_memstats_heap_inuse_bytes"))
		time.Sleep(100 * time.Millisecond)
	}
	growth := (peak - before) / (1 << 20)
	t.Logf("heap in use: %.1f MiB before, %.1f MiB with %d stalled bodies (%.1f MiB declared)",
		before/(1<<20), peak/(1<<20), conns, float64(conns*declared)/(1<<20))
	if growth > 40 {
		t.Errorf("%d connections that each sent 10 bytes grew the heap by %.0f MiB, want well under the %d MiB they declared",
			conns, growth, conns*declared>>20)
	}
}

func TestBodyReadTimeoutAnswers408(t *testing.T) {
	p, fake := startWithFake(t, "BODY_READ_TIMEOUT=300ms")
	conn := stallBody(t, p.api, "/wxa/msg_sec_check", 100, `{"content"`)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), `"errcode":-1`) || !resp.Close {
		t.Errorf("status %d close %v body %s, want 408 errcode -1 with Connection: close", resp.StatusCode, resp.Close, body)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("the connection stayed open after the 408: %v", err)
	}
	if got := fake.Calls("/wxa/msg_sec_check"); got != 0 {
		t.Errorf("a stalled body reached WeChat %d times", got)
	}
	if !strings.Contains(p.stderr.String(), `"body_read_timeout":"300ms"`) {
		t.Errorf("the config log does not report BODY_READ_TIMEOUT:\n%s", p.stderr.String())
	}
}
