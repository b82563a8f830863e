package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The request kinds of the load.
const (
	kindCode   = iota // POST /wxa/getwxacodeunlimit on the API port
	kindQRCode        // GET /qrcode on QRCODE_ADDR
	kindPass          // POST /wxa/msg_sec_check, a passthrough API
)

var kindNames = []string{"code", "qrcode", "passthrough"}

// answer is what a caller got. At and Took are seconds.
type answer struct {
	At, Took float32
	Slot     int8
	Kind     int8
	Status   int16
	Errcode  int32
	Class    string // image, ok_json, errcode, http, transport
	Err      string `json:",omitempty"` // of a transport error
}

// isTokenError reports the errcodes a caller must never see: the sidecar
// refreshes the token and replays on them.
func isTokenError(code int) bool { return code == 40001 || code == 40014 || code == 42001 }

// checker judges every answer and keeps the violations.
type checker struct {
	mu         sync.Mutex
	decoded    map[[32]byte]bool   // images seen that decode
	byScene    map[string][32]byte // the first image each scene was answered with
	violations map[string]int
	examples   []string
	images     int
}

func newChecker() *checker {
	return &checker{decoded: map[[32]byte]bool{}, byScene: map[string][32]byte{}, violations: map[string]int{}}
}

// violate records one violation of kind, with an example while few.
func (c *checker) violate(kind, example string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations[kind]++
	if len(c.examples) < 40 {
		c.examples = append(c.examples, kind+": "+example)
	}
}

func (c *checker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.violations {
		n += v
	}
	return n
}

// image checks an image answered for scene: it decodes (each distinct
// image is decoded once: the same bytes decode the same way), and it is
// the image this scene was answered with before.
func (c *checker) image(scene string, body []byte, where string) {
	sum := sha256.Sum256(body)
	c.mu.Lock()
	c.images++
	known := c.decoded[sum]
	first, seen := c.byScene[scene]
	if !seen {
		c.byScene[scene] = sum
	}
	c.mu.Unlock()
	if seen && first != sum {
		c.violate("inconsistent_image", fmt.Sprintf("scene %s answered two different images (%s)", scene, where))
	}
	if known {
		return
	}
	if _, _, err := image.Decode(bytes.NewReader(body)); err != nil {
		c.violate("broken_image", fmt.Sprintf("scene %s: %d bytes that do not decode: %v (%s)", scene, len(body), err, where))
		return
	}
	c.mu.Lock()
	c.decoded[sum] = true
	c.mu.Unlock()
}

// load is the bounded client load.
type load struct {
	cfg    config
	reps   []*replica
	client *http.Client
	chk    *checker
	rng    *rand.Rand // the dispatcher's only
	t0     time.Time

	scenes   []string // every scene asked, in order; the dispatcher's only
	served   []string // scenes a caller got an image for (under mu)
	isServed map[string]bool

	mu       sync.Mutex
	answers  []answer
	shed     int // requests not sent: every worker busy, or no replica up
	newAsked int
	newAt    []float32 // when each new scene was asked, seconds since t0
}

func newLoad(cfg config, reps []*replica, chk *checker) *load {
	return &load{cfg: cfg, reps: reps, chk: chk, isServed: map[string]bool{}, rng: rand.New(rand.NewPCG(uint64(cfg.seed), 0x10ad)),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128,
			MaxConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}}}
}

// maxInFlight bounds the requests waiting for an answer; past it a request
// is shed (counted), so a stalled fleet cannot pile up goroutines here.
const maxInFlight = 1024

// run sends cfg.rps requests a second from t0 until end, then waits (at
// most 45 s) for the last answers.
func (l *load) run(ctx context.Context, t0, end time.Time) {
	l.t0 = t0
	interval := time.Second / time.Duration(l.cfg.rps)
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		at := t0.Add(time.Duration(i) * interval)
		if !at.Before(end) || !sleepUntil(ctx, at) {
			break
		}
		r := l.pick()
		if r == nil {
			l.mu.Lock()
			l.shed++
			l.mu.Unlock()
			continue
		}
		kind, scene := l.next()
		select {
		case sem <- struct{}{}:
			wg.Go(func() {
				defer func() { <-sem }()
				a := l.do(ctx, r, kind, scene)
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
			})
		default:
			l.mu.Lock()
			l.shed++
			l.mu.Unlock()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
	}
}

func (l *load) pick() *replica {
	var up []*replica
	for _, r := range l.reps {
		if r.routed.Load() {
			up = append(up, r)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[l.rng.IntN(len(up))]
}

// next chooses a request: 85% code POSTs, 10% GET /qrcode, 5% passthrough;
// a code asks a new scene with probability newShare, else one of the last
// 3000 a caller got an image for (a code already made, asked again: what a
// page of codes does), so the demand on WeChat is the new scenes.
func (l *load) next() (kind int, scene string) {
	switch x := l.rng.Float64(); {
	case x < 0.85:
		kind = kindCode
	case x < 0.95:
		kind = kindQRCode
	default:
		return kindPass, ""
	}
	l.mu.Lock()
	served := len(l.served)
	if served > 0 {
		scene = l.served[served-1-l.rng.IntN(min(served, 3000))]
	}
	l.mu.Unlock()
	if served == 0 || l.rng.Float64() < l.cfg.newShare {
		scene = "s" + strconv.FormatInt(l.cfg.seed, 36) + "-" + strconv.Itoa(len(l.scenes))
		l.scenes = append(l.scenes, scene)
		l.mu.Lock()
		l.newAsked++
		l.newAt = append(l.newAt, float32(time.Since(l.t0).Seconds()))
		l.mu.Unlock()
		return kind, scene
	}
	return kind, scene
}

func (l *load) do(ctx context.Context, r *replica, kind int, scene string) answer {
	start := time.Now()
	a := answer{At: float32(start.Sub(l.t0).Seconds()), Slot: int8(r.slot), Kind: int8(kind)}
	var req *http.Request
	var err error
	switch kind {
	case kindCode:
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.api+codePath,
			strings.NewReader(`{"scene":"`+scene+`"}`))
	case kindQRCode:
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.qr+"/qrcode?scene="+url.QueryEscape(scene), nil)
	default:
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.api+checkPath,
			strings.NewReader(`{"content":"hello from the soak"}`))
	}
	if err != nil {
		panic(err)
	}
	resp, err := l.client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
	}
	a.Took = float32(time.Since(start).Seconds())
	if err != nil {
		a.Class, a.Err = "transport", err.Error()
		return a
	}
	a.Status = int16(resp.StatusCode)
	where := fmt.Sprintf("%s on replica %d at %.1f s", kindNames[kind], r.slot, a.At)
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode == http.StatusOK && strings.HasPrefix(ct, "image/") && kind != kindPass:
		a.Class = "image"
		l.chk.image(scene, body, where)
		l.mu.Lock()
		if !l.isServed[scene] {
			l.isServed[scene] = true
			l.served = append(l.served, scene)
		}
		l.mu.Unlock()
	case strings.HasPrefix(ct, "application/json"):
		var e struct {
			Errcode *int `json:"errcode"`
		}
		if json.Unmarshal(body, &e) != nil {
			a.Class = "http"
			break
		}
		if e.Errcode == nil || *e.Errcode == 0 {
			a.Class = "ok_json"
			if kind != kindPass {
				// A code endpoint answering JSON without an errcode: no image.
				l.chk.violate("broken_image", fmt.Sprintf("scene %s: HTTP %d JSON without an errcode (%s)", scene, resp.StatusCode, where))
			}
			break
		}
		a.Class, a.Errcode = "errcode", int32(*e.Errcode)
		if isTokenError(*e.Errcode) {
			l.chk.violate("token_error", fmt.Sprintf("errcode %d, HTTP %d (%s)", *e.Errcode, resp.StatusCode, where))
		}
	default:
		a.Class = "http"
		if resp.StatusCode == http.StatusOK && kind != kindPass {
			l.chk.violate("broken_image", fmt.Sprintf("scene %s: HTTP 200 %q, %d bytes (%s)", scene, ct, len(body), where))
		}
	}
	return a
}

// snapshot returns the answers so far.
func (l *load) snapshot() []answer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]answer(nil), l.answers...)
}
