package pregen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	// broken is an answer of HTTP 200 whose body starts as an image but
	// does not decode as one; err says why. It fails its row: a sidecar
	// answered, but nothing is saved.
	broken bool
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
	// shown is endpoint as messages print it: its password redacted.
	shown string
	// limits is the sidecar's URL of proxy.PathLimits.
	limits string
}

func newClient(sidecar, endpoint string, concurrency int, timeout time.Duration) *client {
	transport := &http.Transport{
		Proxy:               nil, // the sidecar is local or port-forwarded; never through an HTTP proxy
		MaxIdleConnsPerHost: concurrency + 1,
		IdleConnTimeout:     90 * time.Second,
	}
	base := strings.TrimSuffix(sidecar, "/")
	return &client{
		http:     &http.Client{Transport: transport, Timeout: timeout},
		endpoint: base + endpoint,
		shown:    redactURL(base + endpoint),
		limits:   base + pathLimits,
	}
}

// redactURL is raw with any password replaced by xxxxx (url.URL.Redacted),
// for every message that names the sidecar: --sidecar may carry HTTP basic
// credentials for a proxy in front of it. A raw URL that does not parse is
// cut at its first '@' or shown as "the --sidecar URL", never printed whole.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err == nil {
		return u.Redacted()
	}
	if scheme, rest, ok := strings.Cut(raw, "://"); ok && strings.Contains(rest, "@") {
		return scheme + "://xxxxx@" + rest[strings.LastIndexByte(rest, '@')+1:]
	}
	if strings.Contains(raw, "@") {
		return "the --sidecar URL"
	}
	return raw
}

// transportError is err, an http.Client failure, as a message says it: a
// *url.Error's own URL (which net/http prints with "***" for a password, and
// which repeats what the message names already) is left out.
func transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// ask sends body; onlyIfCached asks the sidecar to answer from its cache or
// not at all. An error is a failure to get any answer from a sidecar:
// transport, or an answer that is neither an image nor WeChat's JSON.
// maxRetryAfter caps, in seconds, how long one Retry-After can pause the run.
const maxRetryAfter = 120

func (c *client) ask(ctx context.Context, body []byte, onlyIfCached bool) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return answer{}, fmt.Errorf("POST %s: %w", c.shown, transportError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	if onlyIfCached {
		req.Header.Set("Cache-Control", "only-if-cached")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("POST %s: %w", c.shown, transportError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxImageBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("POST %s: reading the answer: %w", c.shown, transportError(err))
	}
	if len(b) > maxImageBytes {
		return answer{}, fmt.Errorf("POST %s: answer of more than %d bytes", c.shown, maxImageBytes)
	}
	a := answer{status: resp.StatusCode}
	if ext := imageExt(b); resp.StatusCode == http.StatusOK && ext != "" {
		if err := checkImage(b); err != nil {
			// Magic bytes are four bytes anyone can write before an HTML
			// page: what is saved as .jpg must be one.
			a.broken = true
			a.err = &wechat.Error{Status: resp.StatusCode, Code: wechat.SystemBusy,
				Msg: fmt.Sprintf("the sidecar answered %d bytes that are not a whole %s (%v): not saved", len(b), ext, err)}
			return a, nil
		}
		a.image, a.ext = b, ext
		return a, nil
	}
	var e struct {
		Errcode *int   `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}
	if json.Unmarshal(b, &e) != nil || e.Errcode == nil {
		return answer{}, fmt.Errorf("%s answered HTTP %d, neither an image nor an errcode: %q",
			c.shown, resp.StatusCode, truncate(b, 80))
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
