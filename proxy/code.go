package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// The code-image endpoints, whose answers are cached.
const (
	pathUnlimited = wechat.PathUnlimited
	pathWxacode   = wechat.PathWxacode
	pathQRCode    = wechat.PathQRCode
)

// Cache-Status values (RFC 9211), exactly one per image response.
const (
	cacheStatusHit       = "wxa-sidecar; hit"
	cacheStatusStored    = "wxa-sidecar; fwd=uri-miss; stored"
	cacheStatusCollapsed = "wxa-sidecar; fwd=uri-miss; collapsed"
	cacheStatusMiss      = "wxa-sidecar; fwd=uri-miss"
	cacheStatusBypass    = "wxa-sidecar; fwd=bypass"
)

// cacheStatusHeader holds each Cache-Status value as a header value, built
// once and shared.
var cacheStatusHeader = map[string][]string{
	cacheStatusHit:       {cacheStatusHit},
	cacheStatusStored:    {cacheStatusStored},
	cacheStatusCollapsed: {cacheStatusCollapsed},
	cacheStatusMiss:      {cacheStatusMiss},
}

// maxImageBytes bounds an upstream image; WeChat's weigh a few hundred KB.
const maxImageBytes = 16 << 20

// serveCode answers a POST to one of the code-image endpoints: validated
// locally, then from the cache, else by one upstream call shared by every
// identical request in flight.
func (p *Proxy) serveCode(w http.ResponseWriter, r *http.Request, c *call) {
	body, err := p.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	if r.Header.Get("Wechatmp-Signature") != "" {
		// A signed body is encrypted: it cannot be keyed by its parameters
		// and must reach WeChat byte for byte.
		w.Header().Set("Cache-Status", cacheStatusBypass)
		p.proxyBuffered(w, r, c, body)
		return
	}
	var res codeResult
	if key, ok := p.aliases.get(c.app.id, c.path, body); ok {
		if e, ok := p.cache.Get(key); ok {
			p.cacheHits.Inc()
			writeImage(w, codeResult{entry: e, cacheStatus: cacheStatusHit}, false)
			return
		}
		// The cache counted this request's miss: straight to the flight,
		// without a second Get that would count it again.
		res, err = p.codeMiss(r.Context(), c, key, body, r.Header.Get("Content-Type"))
	} else {
		canonical, cerr := wxacode.Canonical(c.path, body)
		if cerr != nil {
			writeError(w, cerr)
			return
		}
		key := cache.Key(wxacode.KeyOf(c.app.id, c.path, canonical))
		p.aliases.put(c.app.id, c.path, body, key)
		res, err = p.code(r.Context(), c, key, body, r.Header.Get("Content-Type"))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	// POSTs ignore conditional headers: SDKs never send them, and RFC 9110
	// would demand 412 rather than 304.
	writeImage(w, res, false)
}

// aliasTable remembers which canonical key a valid raw body stands for, so
// a body seen before, byte for byte, is neither parsed nor hashed again: the
// common case of a page asking for the same code. Bodies are compared in
// full and the key is a pure function of them, so an entry is never wrong;
// the table starts over when it holds maxBytes, so it stays bounded.
type aliasTable struct {
	mu       sync.RWMutex
	m        map[aliasScope]map[string]cache.Key
	bytes    int
	maxBytes int
}

type aliasScope struct{ app, endpoint string }

const (
	// maxAliasBody: a code request weighs about a hundred bytes; a larger
	// one is canonicalized every time rather than held.
	maxAliasBody = 1 << 10
	// aliasOverhead approximates what an entry costs beyond its body.
	aliasOverhead = 96
)

func newAliasTable(maxBytes int) *aliasTable {
	return &aliasTable{m: make(map[aliasScope]map[string]cache.Key), maxBytes: maxBytes}
}

func (t *aliasTable) get(app, endpoint string, body []byte) (cache.Key, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	k, ok := t.m[aliasScope{app, endpoint}][string(body)]
	return k, ok
}

func (t *aliasTable) put(app, endpoint string, body []byte, canonical cache.Key) {
	if len(body) > maxAliasBody {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bytes+len(body)+aliasOverhead > t.maxBytes {
		clear(t.m)
		t.bytes = 0
	}
	scope := aliasScope{app, endpoint}
	bodies := t.m[scope]
	if bodies == nil {
		bodies = make(map[string]cache.Key)
		t.m[scope] = bodies
	}
	if _, ok := bodies[string(body)]; !ok {
		t.bytes += len(body) + aliasOverhead
		bodies[string(body)] = canonical
	}
}

// codeResult is one caller's answer: the image and how it was obtained.
type codeResult struct {
	entry       *cache.Entry
	cacheStatus string
	numUsed     string // only for the caller whose flight spent the quota
}

// flight is what one upstream load produced, shared by its callers; a
// failed flight has a leader and nothing else.
type flight struct {
	leader  *int // identifies the caller whose request started the flight
	entry   *cache.Entry
	hit     bool // found in the cache on the flight's second look
	stored  bool
	numUsed string
}

// errRefusedForGood answers, without asking WeChat again, a code request
// WeChat refused with 45029 within CACHE_TTL.
var errRefusedForGood = &wechatError{Status: http.StatusOK, Errcode: errcodeLifetimeQuota,
	Errmsg: "max code count reached (wxa-sidecar: WeChat answered 45029 to this request before)"}

// code returns the image for key, from the cache or from one flight shared
// by all identical concurrent misses. body and contentType are this
// caller's, sent upstream if this caller's request starts the flight.
func (p *Proxy) code(ctx context.Context, c *call, key cache.Key, body []byte, contentType string) (codeResult, error) {
	if e, ok := p.cache.Get(key); ok {
		p.cacheHits.Inc()
		return codeResult{entry: e, cacheStatus: cacheStatusHit}, nil
	}
	return p.codeMiss(ctx, c, key, body, contentType)
}

// codeMiss answers a request whose Get just missed the cache. It counts the
// request once in cache_requests_total, as the cache counted that Get once:
// miss if the request started the upstream call or was answered without
// one, collapsed if it shared another request's call — whether the call
// succeeded or not.
func (p *Proxy) codeMiss(ctx context.Context, c *call, key cache.Key, body []byte, contentType string) (codeResult, error) {
	if p.limits.refusedForGood(key) {
		p.metrics.CacheRequests.WithLabelValues("miss").Inc()
		return codeResult{}, errRefusedForGood
	}
	me := new(int)
	var leading atomic.Bool
	// The flight runs detached from this caller: one caller hanging up
	// must not fail the others sharing it.
	flightCtx := context.WithoutCancel(ctx)
	ch := p.flights.DoChan(string(key[:]), func() (v any, err error) {
		leading.Store(true)
		defer func() {
			// DoChan re-panics in a goroutine of its own, which would
			// kill the process.
			if r := recover(); r != nil {
				v, err = &flight{leader: me}, fmt.Errorf("proxy: panic while loading a code: %v", r)
			}
		}()
		return p.loadCode(flightCtx, c, key, body, contentType, me)
	})
	count := func(collapsed bool) {
		result := "miss"
		if collapsed {
			result = "collapsed"
		}
		p.metrics.CacheRequests.WithLabelValues(result).Inc()
	}
	select {
	case <-ctx.Done():
		count(!leading.Load())
		return codeResult{}, ctx.Err()
	case res := <-ch:
		f, _ := res.Val.(*flight)
		if f == nil {
			f = &flight{}
		}
		// A flight whose second look found the image shared the call of
		// the flight that stored it a moment before.
		shared := f.leader != me || f.hit
		count(shared)
		switch {
		case res.Err != nil:
			return codeResult{}, res.Err
		case shared:
			return codeResult{entry: f.entry, cacheStatus: cacheStatusCollapsed}, nil
		}
		status := cacheStatusMiss
		if f.stored {
			status = cacheStatusStored
		}
		return codeResult{entry: f.entry, cacheStatus: status, numUsed: f.numUsed}, nil
	}
}

// loadCode is the body of a flight: a second look in the cache, then the
// upstream call, retried once after a short backoff if it failed in a way
// that may pass. It returns a flight naming its leader even with an error.
func (p *Proxy) loadCode(ctx context.Context, c *call, key cache.Key, body []byte, contentType string, leader *int) (*flight, error) {
	// A flight that finished between our cache miss and this flight's start
	// has stored the image already (groupcache's load() has the same look).
	// The look is a Peek: the caller's own Get counted this request already.
	if e, ok := p.peek(key); ok {
		return &flight{leader: leader, entry: e, hit: true}, nil
	}
	if p.limits.refusedForGood(key) {
		return &flight{leader: leader}, errRefusedForGood
	}
	for attempt := 0; ; attempt++ {
		f, err := p.fetchCode(ctx, c, body, contentType)
		if err == nil {
			f.leader = leader
			f.stored = p.cache.Set(key, f.entry)
			if f.stored {
				p.metrics.CacheStored.Inc()
			}
			return f, nil
		}
		var ans *wechatAnswer
		if errors.As(err, &ans) && ans.errcode == errcodeLifetimeQuota {
			p.limits.refuseForGood(c.app.id, c.endpoint, key)
		}
		if attempt > 0 || !isTransient(err) {
			if we := asWeChatError(err); we.Status != http.StatusOK {
				// Callers see 502; the log says why, without secrets.
				p.log.Warn("code fetch failed", "endpoint", c.endpoint, "attempts", attempt+1,
					"error", token.RedactError(err).Error())
			}
			return &flight{leader: leader}, err
		}
		p.metrics.UpstreamRetries.WithLabelValues(c.endpoint).Inc()
		backoff := p.retryBackoff/2 + rand.N(p.retryBackoff/2+1)
		select {
		case <-ctx.Done():
			return &flight{leader: leader}, err
		case <-time.After(backoff):
		}
	}
}

// peek looks in the cache without counting the look, when the cache can.
func (p *Proxy) peek(key cache.Key) (*cache.Entry, bool) {
	if pk, ok := p.cache.(cache.Peeker); ok {
		return pk.Peek(key)
	}
	return p.cache.Get(key)
}

// fetchCode makes the upstream call for a code and accepts only a whole,
// valid image.
func (p *Proxy) fetchCode(ctx context.Context, c *call, body []byte, contentType string) (*flight, error) {
	u := *p.upstream
	u.Path += c.path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if contentType == "" {
		contentType = "application/json"
	}
	req.Header.Set("Content-Type", contentType)
	cc := *c
	cc.body = body
	resp, err := p.send(ctx, req, &cc)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// roundTrip counted every outcome but an image's: ok or broken.
	outcome := func(o string) { p.metrics.UpstreamRequests.WithLabelValues(c.endpoint, o).Inc() }
	if resp.StatusCode != http.StatusOK {
		return nil, &upstreamStatusError{status: resp.StatusCode}
	}
	img, err := readImage(resp)
	if err != nil {
		outcome("broken_image")
		return nil, fmt.Errorf("%w: %w", errBrokenImage, err)
	}
	if bytes.HasPrefix(bytes.TrimSpace(img), []byte("{")) {
		// An errcode answer, whatever its Content-Type says.
		return nil, &wechatAnswer{errcode: errcodeOf(img), body: img, contentType: resp.Header.Get("Content-Type")}
	}
	if !isWholeImage(img) {
		outcome("broken_image")
		return nil, fmt.Errorf("%w: %d bytes that are not a whole JPEG or PNG", errBrokenImage, len(img))
	}
	if err := checkDecodable(img); err != nil {
		outcome("broken_image")
		return nil, fmt.Errorf("%w: %w", errBrokenImage, err)
	}
	outcome("ok")
	return &flight{
		entry:   cache.NewEntry(img, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition")),
		numUsed: resp.Header.Get("Num-Used"),
	}, nil
}

// readImage reads an upstream body into a buffer of exactly its length.
// The cache charges an entry len(body); the slack io.ReadAll's growth
// leaves behind (a quarter of it, or more) would be memory held but never
// counted.
func readImage(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 {
		if n > maxImageBytes {
			return nil, errImageTooLarge
		}
		img := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, img); err != nil {
			return nil, err
		}
		return img, nil
	}
	img, err := io.ReadAll(io.LimitReader(resp.Body, maxImageBytes+1))
	if err != nil {
		return nil, err
	}
	if len(img) > maxImageBytes {
		return nil, errImageTooLarge
	}
	return append(make([]byte, 0, len(img)), img...), nil
}

var errImageTooLarge = errors.New("proxy: upstream image larger than " + strconv.Itoa(maxImageBytes) + " bytes")

var errBrokenImage = &wechatError{Status: http.StatusBadGateway, Errcode: errcodeSystem,
	Errmsg: "system error: WeChat sent a broken image (wxa-sidecar)"}

// upstreamStatusError is a non-200 answer from WeChat.
type upstreamStatusError struct{ status int }

func (e *upstreamStatusError) Error() string {
	return "proxy: upstream answered HTTP " + strconv.Itoa(e.status)
}

// wechatAnswer is an errcode answer from WeChat, passed on as WeChat sent it.
type wechatAnswer struct {
	errcode     int
	body        []byte
	contentType string
}

func (e *wechatAnswer) Error() string { return "proxy: WeChat errcode " + strconv.Itoa(e.errcode) }

// isTransient reports failures worth one retry: WeChat busy (-1), HTTP 5xx,
// a connection error or a broken image.
func isTransient(err error) bool {
	var ans *wechatAnswer
	if errors.As(err, &ans) {
		return ans.errcode == errcodeSystem
	}
	var se *upstreamStatusError
	if errors.As(err, &se) {
		return se.status >= 500
	}
	var te *transportError
	return errors.Is(err, errBrokenImage) || errors.As(err, &te) && !errors.Is(err, context.Canceled)
}

var (
	jpegStart = []byte{0xFF, 0xD8, 0xFF}
	jpegEnd   = []byte{0xFF, 0xD9}
	pngStart  = []byte{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}
	// pngEnd is the IEND chunk: zero length, type, CRC.
	pngEnd = []byte{0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82}
)

// isWholeImage reports whether b starts and ends as a JPEG or a PNG, judged
// by the bytes, never by the label (WeChat labels PNGs image/jpeg).
func isWholeImage(b []byte) bool {
	return (bytes.HasPrefix(b, jpegStart) && bytes.HasSuffix(b, jpegEnd) && len(b) > len(jpegStart)+len(jpegEnd)) ||
		(bytes.HasPrefix(b, pngStart) && bytes.HasSuffix(b, pngEnd) && len(b) > len(pngStart)+len(pngEnd))
}

// maxImageSide bounds each side of an image the sidecar decodes. WeChat's
// codes are at most 1280 px; a hostile header of a few hundred bytes can
// declare 65000×65000 px, which the decoder would allocate (gigabytes)
// before finding there is no data.
const maxImageSide = 4096

// checkDecodable decodes a whole image once, with the decoder its magic
// bytes name (never the image registry, which would accept any format
// linked into the binary), after checking its declared size. Markers at
// both ends do not make an image: garbage between them would be stored
// and served to everyone for CACHE_TTL. JPEG has no checksum, so flipped
// bits in the scan data still decode: this catches garbage, not every
// corruption.
func checkDecodable(b []byte) error {
	var (
		decodeConfig func(io.Reader) (image.Config, error)
		decode       func(io.Reader) (image.Image, error)
		format       string
	)
	switch {
	case bytes.HasPrefix(b, jpegStart):
		decodeConfig, decode, format = jpeg.DecodeConfig, jpeg.Decode, "JPEG"
	case bytes.HasPrefix(b, pngStart):
		decodeConfig, decode, format = png.DecodeConfig, png.Decode, "PNG"
	default:
		return errors.New("proxy: neither a JPEG nor a PNG")
	}
	cfg, err := decodeConfig(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("proxy: %s header: %w", format, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxImageSide || cfg.Height > maxImageSide {
		return fmt.Errorf("proxy: %s of %d×%d px, beyond %d×%d", format, cfg.Width, cfg.Height, maxImageSide, maxImageSide)
	}
	if _, err := decode(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("proxy: %s does not decode: %w", format, err)
	}
	return nil
}

// writeImage sends a cached or fetched image with WeChat's headers.
func writeImage(w http.ResponseWriter, res codeResult, headOnly bool) {
	h := w.Header()
	e := res.entry
	// Shared, prebuilt values: a hit allocates no header.
	for k, v := range e.Header {
		h[k] = v
	}
	h["Cache-Status"] = cacheStatusHeader[res.cacheStatus]
	if res.numUsed != "" {
		h.Set("Num-Used", res.numUsed)
	}
	w.WriteHeader(http.StatusOK)
	if !headOnly {
		w.Write(e.Body)
	}
}
