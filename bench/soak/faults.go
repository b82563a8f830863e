package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg" // the decoders image.Decode checks an injected corruption with
	_ "image/png"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

const (
	codePath        = "/wxa/getwxacodeunlimit"
	stableTokenPath = "/cgi-bin/stable_token"
	checkPath       = "/wxa/msg_sec_check"
)

// upstream is the soak's fault layer in front of the fake WeChat: one
// listener per replica slot (so every call is known by the process that
// made it), injecting the faults that are active, counting every call.
// The fake itself is not changed; its own RevokeTokens kills tokens.
type upstream struct {
	fake *wechattest.Server
	urls []string // per slot
	srvs []*http.Server

	mu          sync.Mutex
	t0          time.Time // the load's start; calls before it have negative times
	rng         *rand.Rand
	bursts      []burst
	sticky      *fault
	stickyUntil time.Time
	deadToken   string // a sticky fault's dead token, answered to normal-mode fetches
	lastToken   string // the last stable token the fake issued
	inc         []int  // each slot's incarnation
	calls       []call
}

// burst is an active time-bounded fault.
type burst struct {
	f     *fault
	until time.Time
}

// call is one call WeChat received. At is seconds since the load started.
type call struct {
	At      float64 `json:"at_s"`
	Slot    int     `json:"slot"`
	Inc     int     `json:"inc"`
	Path    string  `json:"path"`
	Scene   string  `json:"scene,omitempty"`
	Outcome string  `json:"outcome"` // image, ok_json, errcode, http500, truncated, corrupt, cancelled, other
	Errcode int     `json:"errcode,omitempty"`
}

func newUpstream(fake *wechattest.Server, slots int, seed int64) (*upstream, error) {
	u := &upstream{fake: fake, rng: rand.New(rand.NewPCG(uint64(seed), 0x5eed)), inc: make([]int, slots), t0: time.Now()}
	for slot := range slots {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			u.close()
			return nil, fmt.Errorf("soak: upstream listener: %w", err)
		}
		srv := &http.Server{Handler: u.handler(slot), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		u.srvs = append(u.srvs, srv)
		u.urls = append(u.urls, "http://"+ln.Addr().String())
	}
	return u, nil
}

func (u *upstream) close() {
	for _, s := range u.srvs {
		s.Close()
	}
}

func (u *upstream) start(t0 time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.t0 = t0
}

// setInc says that slot's calls from now on come from incarnation inc (a
// new process; the previous one has exited).
func (u *upstream) setInc(slot, inc int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.inc[slot] = inc
}

func (u *upstream) since(t time.Time) float64 { return t.Sub(u.t0).Seconds() }

// snapshot returns the calls so far, in the order they arrived.
func (u *upstream) snapshot() []call {
	u.mu.Lock()
	calls := append([]call(nil), u.calls...)
	u.mu.Unlock()
	slices.SortStableFunc(calls, func(a, b call) int { return cmp.Compare(a.At, b.At) })
	return calls
}

// apply turns an upstream or token fault on; it ends by itself.
func (u *upstream) apply(f *fault, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch f.Kind {
	case kRevoke:
		u.fake.RevokeTokens()
	case kSticky:
		u.fake.RevokeTokens()
		if u.lastToken == "" {
			f.Note = "no token seen yet: a plain revocation"
			return
		}
		u.sticky, u.deadToken, u.stickyUntil = f, u.lastToken, now.Add(time.Duration(f.For*float64(time.Second)))
	default:
		u.bursts = append(u.bursts, burst{f: f, until: now.Add(time.Duration(f.For * float64(time.Second)))})
	}
}

// stickyOver reports whether the sticky fault f has ended (by a forced
// refresh or its bound) and when.
func (u *upstream) stickyOver(f *fault, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.sticky != f {
		return true
	}
	if !now.Before(u.stickyUntil) {
		u.sticky = nil
		f.Note = "no forced refresh within its bound"
		return true
	}
	return false
}

func (u *upstream) handler(slot int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		path := r.URL.Path
		isCode := path == codePath || path == "/wxa/getwxacode" || path == "/cgi-bin/wxaapp/createwxaqrcode"
		now := time.Now()

		u.mu.Lock()
		c := call{At: u.since(now), Slot: slot, Inc: u.inc[slot], Path: path}
		if isCode {
			var req struct {
				Scene string `json:"scene"`
			}
			json.Unmarshal(body, &req)
			c.Scene = req.Scene
		}
		var delay time.Duration
		inject := ""
		kept := u.bursts[:0]
		for _, b := range u.bursts {
			if !now.Before(b.until) {
				continue
			}
			kept = append(kept, b)
			switch {
			case b.f.Kind == kLatency:
				delay = time.Duration(b.f.Delay * float64(time.Second))
			case isCode && inject == "" && u.rng.Float64() < b.f.Share:
				inject = b.f.Kind
			}
		}
		u.bursts = kept
		forced := path == stableTokenPath && bytes.Contains(body, []byte(`"force_refresh":true`))
		deadToken := ""
		if path == stableTokenPath && !forced && u.sticky != nil && now.Before(u.stickyUntil) {
			deadToken = u.deadToken
		}
		u.mu.Unlock()

		defer func() {
			u.mu.Lock()
			u.calls = append(u.calls, c)
			u.mu.Unlock()
		}()
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				c.Outcome = "cancelled"
				return
			}
		}
		switch inject {
		case kBusy:
			c.Outcome, c.Errcode = "errcode", -1
			writeErrcode(w, -1, "system error")
			return
		case k45011:
			c.Outcome, c.Errcode = "errcode", 45011
			writeErrcode(w, 45011, "api minute-quota reach limit, mustslower retry next minute")
			return
		case k500:
			c.Outcome = "http500"
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		if deadToken != "" {
			c.Outcome = "ok_json"
			w.Header().Set("Content-Type", "application/json; encoding=utf-8")
			fmt.Fprintf(w, `{"access_token":%q,"expires_in":7000}`, deadToken)
			return
		}
		if inject == kTruncated || inject == kCorrupt {
			rec := httptest.NewRecorder()
			u.fake.ServeHTTP(rec, r)
			img := rec.Body.Bytes()
			if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "image/") {
				// Not an image to spoil (a token error, say): as the fake said.
				c.Outcome, c.Errcode = classify(rec.Code, rec.Header().Get("Content-Type"), img)
				copyHeader(w.Header(), rec.Header())
				w.WriteHeader(rec.Code)
				w.Write(img)
				return
			}
			h := w.Header()
			copyHeader(h, rec.Header())
			if inject == kTruncated {
				// The whole length announced, half sent: net/http closes the
				// connection, the sidecar reads an unexpected EOF.
				c.Outcome = "truncated"
				h.Set("Content-Length", strconv.Itoa(len(img)))
				w.WriteHeader(http.StatusOK)
				w.Write(img[:len(img)/2])
				return
			}
			c.Outcome = "corrupt"
			bad := undecodable(img)
			h.Set("Content-Length", strconv.Itoa(len(bad)))
			w.WriteHeader(http.StatusOK)
			w.Write(bad)
			return
		}
		cw := &capture{ResponseWriter: w}
		u.fake.ServeHTTP(cw, r)
		if cw.status == 0 {
			cw.status = http.StatusOK
		}
		c.Outcome, c.Errcode = classify(cw.status, w.Header().Get("Content-Type"), cw.head)
		if path == stableTokenPath && c.Outcome == "ok_json" {
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			if json.Unmarshal(cw.head, &tok) == nil && tok.AccessToken != "" {
				u.mu.Lock()
				u.lastToken = tok.AccessToken
				if forced && u.sticky != nil {
					// A forced refresh passed: the sticky fault is over.
					u.sticky.Note = fmt.Sprintf("ended by a forced refresh at %.1f s", u.since(time.Now()))
					u.sticky = nil
				}
				u.mu.Unlock()
			}
		}
	})
}

// classify names an answer of the fake.
func classify(status int, contentType string, head []byte) (string, int) {
	switch {
	case status == http.StatusOK && strings.HasPrefix(contentType, "image/"):
		return "image", 0
	case status == http.StatusOK && strings.HasPrefix(contentType, "application/json"):
		var e struct {
			Errcode int `json:"errcode"`
		}
		json.Unmarshal(head, &e)
		if e.Errcode != 0 {
			return "errcode", e.Errcode
		}
		return "ok_json", 0
	}
	return "other", 0
}

// undecodable spoils a whole image so that it still starts and ends as one
// (JPEG's FF D8 FF ... FF D9) but does not decode: its first half and an
// end marker, or, should that decode, the fake's own garbage between
// markers. Checked with the decoders the sidecar uses, so an injected
// corruption is never a decodable image.
func undecodable(img []byte) []byte {
	bad := append(append([]byte(nil), img[:len(img)/2]...), 0xFF, 0xD9)
	if _, _, err := image.Decode(bytes.NewReader(bad)); err != nil {
		return bad
	}
	bad = append([]byte{0xFF, 0xD8, 0xFF, 0xE0}, bytes.Repeat([]byte("not a jpeg scan "), 64)...)
	return append(bad, 0xFF, 0xD9)
}

func writeErrcode(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	fmt.Fprintf(w, `{"errcode":%d,"errmsg":"%s rid: soak"}`, code, msg)
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

// capture passes an answer through and keeps its status and first bytes.
type capture struct {
	http.ResponseWriter
	status int
	head   []byte
}

func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if room := 1024 - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(room, len(p))]...)
	}
	return c.ResponseWriter.Write(p)
}

// sleepUntil waits until t or ctx is done; false when ctx ended it.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
