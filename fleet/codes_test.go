package fleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
	"github.com/wxa-sidecar/wxa-sidecar/redistest"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// sidecar is one replica's codes on the fleet's tiers, as main wires them.
type sidecar struct {
	*leaseReplica
	codes   *codes.Codes
	lookups map[string]int
	mu      sync.Mutex
}

func newSidecar(t *testing.T, name, url string) *sidecar {
	t.Helper()
	r := newLeaseReplica(t, name, url, FlightOptions{})
	l1, err := cache.NewMemory(cache.Options{MaxBytes: 16 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l1.Close)
	s := &sidecar{leaseReplica: r, lookups: map[string]int{}}
	s.codes = codes.New(codes.Options{L1: l1, L2: r.l2, Flight: r.flight,
		Refusals: NewRefusals(r.c, RefusalsOptions{TTL: time.Hour}), RetryBackoff: time.Millisecond,
		Hooks: codes.Hooks{Lookup: func(result string) { s.mu.Lock(); s.lookups[result]++; s.mu.Unlock() }}})
	return s
}

// upstreamJPEG is WeChat for codes: a small whole JPEG, counted, held
// until letGo is closed.
type upstreamJPEG struct {
	calls   atomic.Int64
	started chan struct{}
	letGo   chan struct{}
	err     error
	body    []byte
}

func newUpstreamJPEG(t *testing.T) *upstreamJPEG {
	img := image.NewGray(image.Rect(0, 0, 32, 32))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	img.Set(1, 1, color.White)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return &upstreamJPEG{started: make(chan struct{}, 100), letGo: make(chan struct{}), body: buf.Bytes()}
}

func (u *upstreamJPEG) Fetch(ctx context.Context) (*codes.Image, error) {
	u.calls.Add(1)
	u.started <- struct{}{}
	<-u.letGo
	if u.err != nil {
		return nil, u.err
	}
	return &codes.Image{Body: u.body, ContentType: "image/jpeg", NumUsed: "1"}, nil
}

type getResult struct {
	res codes.Result
	err error
}

func (s *sidecar) getAsync(k cache.Key, f codes.Fetcher) <-chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		res, err := s.codes.Get(Scope(context.Background()), k, codes.Request{App: "wxapp", Endpoint: wechat.PathUnlimited}, f)
		ch <- getResult{res, err}
	}()
	return ch
}

func receiveGet(t *testing.T, what string, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer within 20s", what)
	}
	return getResult{}
}

// Three replicas as main wires them: the first fetches (stored), the
// second waits for its flight (collapsed, shared), the third finds the
// image in Redis (shared hit), and each counts one lookup.
func TestReplicasShareOneFetchThroughCodes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b, c := newSidecar(t, "a", srv.URL), newSidecar(t, "b", srv.URL), newSidecar(t, "c", srv.URL)
	up := newUpstreamJPEG(t)
	k := testKey(20)
	fromA := a.getAsync(k, up)
	<-up.started
	fromB := b.getAsync(k, up)
	waitUntil(t, "b to wait for a's flight", func() bool { return b.reported("lease ok") && b.reported("l2_get ok") })
	close(up.letGo)
	ra, rb := receiveGet(t, "a", fromA), receiveGet(t, "b", fromB)
	if ra.err != nil || ra.res.Status != codes.Stored || ra.res.NumUsed != "1" {
		t.Errorf("a: %v, %v; want stored", ra.res.Status, ra.err)
	}
	if rb.err != nil || rb.res.Status != codes.CollapsedShared || rb.res.NumUsed != "" ||
		!bytes.Equal(rb.res.Entry.Body, up.body) {
		t.Errorf("b: %v, %v; want the image, collapsed shared", rb.res.Status, rb.err)
	}
	rc := receiveGet(t, "c", c.getAsync(k, up))
	if rc.err != nil || rc.res.Status != codes.SharedHit || !bytes.Equal(rc.res.Entry.Body, up.body) {
		t.Errorf("c: %v, %v; want a shared hit", rc.res.Status, rc.err)
	}
	for _, s := range []*sidecar{b, c} {
		if r := receiveGet(t, s.name+" again", s.getAsync(k, up)); r.res.Status != codes.Hit {
			t.Errorf("%s again: %v, want an L1 hit", s.name, r.res.Status)
		}
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("%d upstream calls, want 1", got)
	}
	want := map[string]string{"a": "map[miss:1]", "b": "map[collapsed:1 hit:1]", "c": "map[hit:1 shared_hit:1]"}
	for _, s := range []*sidecar{a, b, c} {
		s.mu.Lock()
		got := fmt.Sprint(s.lookups)
		s.mu.Unlock()
		if got != want[s.name] {
			t.Errorf("%s counted %s, want %s", s.name, got, want[s.name])
		}
	}
}

// A 45029 one replica heard is answered by another without asking WeChat;
// with Redis gone, each replica still remembers its own.
func TestLifetimeRefusalIsSharedAndKeptLocallyWithoutRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := newSidecar(t, "a", srv.URL), newSidecar(t, "b", srv.URL)
	up := newUpstreamJPEG(t)
	close(up.letGo)
	up.err = wechat.Errorf(wechat.LifetimeQuota, "max code count reached rid: 6")
	k := testKey(21)
	if r := receiveGet(t, "a", a.getAsync(k, up)); !errors.Is(r.err, up.err) {
		t.Fatalf("a: %v, want WeChat's 45029", r.err)
	}
	if r := receiveGet(t, "b", b.getAsync(k, up)); !errors.Is(r.err, codes.ErrRefusedBefore) {
		t.Fatalf("b: %v, want the refusal a heard", r.err)
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("%d upstream calls, want 1", got)
	}
	srv.Stop()
	if r := receiveGet(t, "a without Redis", a.getAsync(k, up)); !errors.Is(r.err, codes.ErrRefusedBefore) {
		t.Errorf("a without Redis: %v, want its own memory of the refusal", r.err)
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("%d upstream calls, want 1", got)
	}
}

// 150 identical misses over three replicas at once: one upstream call,
// one image for all, and each caller counted once.
func TestManyConcurrentMissesOverThreeReplicasMakeOneCall(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	sidecars := []*sidecar{newSidecar(t, "a", srv.URL), newSidecar(t, "b", srv.URL), newSidecar(t, "c", srv.URL)}
	up := newUpstreamJPEG(t)
	k := testKey(22)
	var results []<-chan getResult
	for i := range 150 {
		results = append(results, sidecars[i%3].getAsync(k, up))
	}
	<-up.started
	waitUntil(t, "the two other replicas to wait", func() bool {
		polling := 0
		for _, s := range sidecars {
			if s.reported("l2_get ok") {
				polling++
			}
		}
		return polling == 2
	})
	close(up.letGo)
	for i, ch := range results {
		r := receiveGet(t, "caller", ch)
		if r.err != nil || !bytes.Equal(r.res.Entry.Body, up.body) {
			t.Fatalf("caller %d: %v, %v; want the image", i, r.res.Status, r.err)
		}
	}
	if got := up.calls.Load(); got != 1 {
		t.Errorf("%d upstream calls, want 1", got)
	}
	total := 0
	for _, s := range sidecars {
		s.mu.Lock()
		for _, n := range s.lookups {
			total += n
		}
		s.mu.Unlock()
	}
	if total != 150 {
		t.Errorf("%d lookups counted, want 150", total)
	}
}

// A code another replica already stored costs a replica no lease and no
// look at the 45029 memory beyond the first: one check of the refusals,
// one round trip that finds the image instead of taking the lease, and the
// read of the image itself.
func TestASharedHitTakesNoLease(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := newSidecar(t, "a", srv.URL), newSidecar(t, "b", srv.URL)
	up := newUpstreamJPEG(t)
	close(up.letGo)
	k := testKey(31)
	if r := receiveGet(t, "a", a.getAsync(k, up)); r.err != nil || r.res.Status != codes.Stored {
		t.Fatalf("a: %v %v, want stored", r.res.Status, r.err)
	}
	<-up.started
	r := receiveGet(t, "b", b.getAsync(k, up))
	if r.err != nil || r.res.Status != codes.SharedHit {
		t.Fatalf("b: %v %v, want a shared hit", r.res.Status, r.err)
	}
	if got := b.rec.list(); got != "cooldown miss,lease ok,l2_get ok" {
		t.Errorf("b's Redis calls: %q, want the refusals check, the lease script finding the image, the read", got)
	}
	if got := b.leaseResults(); got != "map[]" {
		t.Errorf("b's lease results %s, want none: it took no lease", got)
	}
	if n := up.calls.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}
