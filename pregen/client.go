package pregen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// maxImageBytes bounds what is read of one answer: WeChat's images weigh
// a few hundred KB at most.
const maxImageBytes = 16 << 20

// answer is what the sidecar said to one code request.
type answer struct {
	// image is the code, when the sidecar answered one (its extension
	// known by its magic bytes).
	image []byte
	ext   string
	// err is WeChat's (or the sidecar's) errcode answer, with Retry-After
	// when the sidecar sent one; status is the HTTP status it came with.
	err    *wechat.Error
	status int
}

// notCached reports the answer to an only-if-cached request the cache
// could not serve.
func (a answer) notCached() bool {
	return a.status == http.StatusGatewayTimeout && a.err != nil && a.err.Code == wechat.SystemBusy
}

// client sends code requests to a running sidecar.
type client struct {
	http     *http.Client
	endpoint string // the sidecar's URL for the endpoint, prefix included
}

func newClient(sidecar, endpoint string, concurrency int, timeout time.Duration) *client {
	transport := &http.Transport{
		Proxy:               nil, // the sidecar is local or port-forwarded; never through an HTTP proxy
		MaxIdleConnsPerHost: concurrency + 1,
		IdleConnTimeout:     90 * time.Second,
	}
	return &client{
		http:     &http.Client{Transport: transport, Timeout: timeout},
		endpoint: strings.TrimSuffix(sidecar, "/") + endpoint,
	}
}

// ask sends body; onlyIfCached asks the sidecar to answer from its cache or
// not at all. An error is a failure to get any answer from a sidecar:
// transport, or an answer that is neither an image nor WeChat's JSON.
// maxRetryAfter caps, in seconds, how long one Retry-After can pause the run.
const maxRetryAfter = 120

func (c *client) ask(ctx context.Context, body []byte, onlyIfCached bool) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return answer{}, fmt.Errorf("pregen: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if onlyIfCached {
		req.Header.Set("Cache-Control", "only-if-cached")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("pregen: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxImageBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("pregen: reading the answer: %w", err)
	}
	if len(b) > maxImageBytes {
		return answer{}, fmt.Errorf("pregen: answer of more than %d bytes", maxImageBytes)
	}
	a := answer{status: resp.StatusCode}
	if resp.StatusCode == http.StatusOK && imageExt(b) != "" {
		a.image, a.ext = b, imageExt(b)
		return a, nil
	}
	var e struct {
		Errcode *int   `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if json.Unmarshal(b, &e) != nil || e.Errcode == nil {
		return answer{}, fmt.Errorf("pregen: %s answered HTTP %d, neither an image nor an errcode: %q",
			c.endpoint, resp.StatusCode, truncate(b, 80))
	}
	a.err = &wechat.Error{Status: resp.StatusCode, Code: wechat.Errcode(*e.Errcode), Msg: e.Errmsg}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		// Bounded: a minute-quota pause never needs more than the next
		// minute, and a hostile value must not stall the run for a year
		// (or overflow a Duration).
		a.err.RetryAfter = time.Duration(min(s, maxRetryAfter)) * time.Second
	}
	if a.err.Code == wechat.OK {
		// An errcode 0 in place of an image: nothing to save.
		a.err = &wechat.Error{Status: resp.StatusCode, Code: wechat.SystemBusy, Msg: "answer without an image: " + e.Errmsg}
	}
	return a, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// errUnreachable wraps the failure of the reachability check.
var errUnreachable = errors.New("no sidecar answering")
