// Package cache is the sidecar's store of generated code images: ristretto
// behind a small interface, so a shared second tier can be added later
// without touching the proxy.
//
// Entries are immutable once stored — the same *Entry is handed to every
// reader and written to the network as is, never copied — and the cache
// never stores anything its caller did not already check to be a whole,
// valid image.
package cache

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Key identifies a code: the sha256 of app, endpoint and canonical request.
type Key [32]byte

// Entry is one image with the headers WeChat sent with it. Nobody mutates
// an Entry, its Body or its headers after it is created.
type Entry struct {
	Body               []byte
	ContentType        string
	ContentDisposition string
	// ETag is strong: it changes whenever a byte of Body does.
	ETag string
	// Header holds the response headers of the entry (Content-Type,
	// Content-Disposition, Etag, Content-Length), built once by NewEntry so
	// a hit sets them without allocating. Its slices are shared by every
	// response: assign them, never modify them.
	Header map[string][]string
	// Until, when not zero, is the instant from which no tier keeps or
	// serves the entry: a link's expiry less its margin. Zero: the entry
	// never expires (a code image), and each tier keeps it for its own TTL.
	Until time.Time

	key Key // set on the copy the cache stores, to reject a hash collision
}

// NewEntry returns an entry for body with a strong ETag from its bytes.
// Entries are built only by NewEntry.
func NewEntry(body []byte, contentType, contentDisposition string) *Entry {
	sum := sha256.Sum256(body)
	e := &Entry{Body: body, ContentType: contentType, ContentDisposition: contentDisposition,
		ETag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}
	e.Header = map[string][]string{"Etag": {e.ETag}, "Content-Length": {strconv.Itoa(len(body))}}
	if contentType != "" {
		e.Header["Content-Type"] = []string{contentType}
	}
	if contentDisposition != "" {
		e.Header["Content-Disposition"] = []string{contentDisposition}
	}
	return e
}

// NewEntryUntil is NewEntry for an entry no tier may keep or serve from
// until on (see Entry.Until); a zero until is NewEntry's.
func NewEntryUntil(body []byte, contentType, contentDisposition string, until time.Time) *Entry {
	e := NewEntry(body, contentType, contentDisposition)
	e.Until = until
	return e
}

// Options configures a Memory cache.
type Options struct {
	// MaxBytes bounds the bytes held, bodies and headers included.
	MaxBytes int64
	// TTL bounds how long an entry is kept. Codes never expire; this only
	// lets memory go back to entries that are asked for again.
	TTL time.Duration
	// OnEvict and OnReject are called for every entry evicted or declined
	// (they feed the metrics); both optional.
	OnEvict, OnReject func()
	// Now is the clock an entry's Until is read on; nil is time.Now.
	Now func() time.Time
}

// Memory is the local tier (codes.L1): an in-process cache on ristretto.
type Memory struct {
	r        *ristretto.Cache[uint64, *Entry]
	ttl      time.Duration
	maxEntry int64
	onReject func()
	now      func() time.Time

	entries                                   atomic.Int64
	hits, misses, stored, rejected, evictions atomic.Uint64
}

// entryOverhead is what an entry costs beyond its body and headers: the
// Entry, ristretto's item and map slot, the policy's bookkeeping.
const entryOverhead = 256

// NewMemory returns an empty cache.
func NewMemory(opts Options) (*Memory, error) {
	if opts.MaxBytes <= 0 {
		return nil, errors.New("cache: MaxBytes must be positive")
	}
	if opts.TTL <= 0 {
		return nil, errors.New("cache: TTL must be positive")
	}
	m := &Memory{ttl: opts.TTL, onReject: opts.OnReject, now: opts.Now,
		// One entry may not push out more than a quarter of the cache.
		maxEntry: opts.MaxBytes / 4}
	if m.now == nil {
		m.now = time.Now
	}
	onEvict, onReject := opts.OnEvict, opts.OnReject
	// ristretto wants ten counters per item it may hold; images weigh
	// about 10 KB at the least.
	counters := max(opts.MaxBytes/(10<<10)*10, 1000)
	r, err := ristretto.NewCache(&ristretto.Config[uint64, *Entry]{
		NumCounters: counters,
		MaxCost:     opts.MaxBytes,
		BufferItems: 64,
		// The key is already a uniform hash: its first 8 bytes are enough
		// to place it; Get compares the whole key to rule out a collision.
		KeyToHash:          func(k uint64) (uint64, uint64) { return k, 0 },
		IgnoreInternalCost: true,
		OnEvict: func(*ristretto.Item[*Entry]) {
			m.entries.Add(-1)
			m.evictions.Add(1)
			if onEvict != nil {
				onEvict()
			}
		},
		OnReject: func(*ristretto.Item[*Entry]) {
			m.rejected.Add(1)
			if onReject != nil {
				onReject()
			}
		},
	})
	if err != nil {
		return nil, err
	}
	m.r = r
	return m, nil
}

func hashOf(k *Key) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// Get returns the entry stored for k; an entry past its Until is gone.
func (m *Memory) Get(k Key) (*Entry, bool) {
	e, ok := m.r.Get(hashOf(&k))
	if !ok || e.key != k || m.expired(e) {
		m.misses.Add(1)
		return nil, false
	}
	m.hits.Add(1)
	return e, true
}

// Peek returns the entry stored for k, like Get, but counts neither a hit
// nor a miss.
func (m *Memory) Peek(k Key) (*Entry, bool) {
	e, ok := m.r.Get(hashOf(&k))
	if !ok || e.key != k || m.expired(e) {
		return nil, false
	}
	return e, true
}

// expired reports an entry past its Until. ristretto drops it at the same
// instant on its own clock, but lazily and in buckets of seconds; a code
// image (no Until) never reads the clock here.
func (m *Memory) expired(e *Entry) bool {
	return !e.Until.IsZero() && !m.now().Before(e.Until)
}

// cost is what an entry weighs against MaxBytes.
func cost(e *Entry) int64 {
	return int64(len(e.Body)+len(e.ContentType)+len(e.ContentDisposition)+len(e.ETag)) + entryOverhead
}

// Set stores e under k. ristretto admits asynchronously and may drop or
// reject an item; Set waits for the admission to be applied and then looks,
// so it reports true only when a following Get finds the entry.
//
// An entry with an Until is kept until then at the most (and not at all
// once it has passed), and replaces what k held: a link made again lives
// longer than the one before. An entry without one never replaces: same
// key, same code.
func (m *Memory) Set(k Key, e *Entry) bool {
	ttl := m.ttl
	_, held := m.r.Get(hashOf(&k))
	if e.Until.IsZero() {
		if held {
			// Same key, same code: it is stored already (or, after a hash
			// collision, keeps its place).
			return m.has(k)
		}
	} else if ttl = min(ttl, e.Until.Sub(m.now())); ttl <= 0 {
		return false
	}
	stored := *e
	stored.key = k
	c := cost(&stored)
	if c > m.maxEntry {
		m.rejected.Add(1)
		if m.onReject != nil {
			m.onReject()
		}
		return false
	}
	if !m.r.SetWithTTL(hashOf(&k), &stored, c, ttl) {
		// Dropped under contention before the policy saw it.
		m.rejected.Add(1)
		if m.onReject != nil {
			m.onReject()
		}
		return false
	}
	m.r.Wait()
	if !m.has(k) {
		return false
	}
	if !held {
		m.entries.Add(1)
	}
	m.stored.Add(1)
	return true
}

func (m *Memory) has(k Key) bool {
	_, ok := m.Peek(k)
	return ok
}

// Close stops ristretto's goroutines.
func (m *Memory) Close() { m.r.Close() }

// Stats are the cache's counters and size, for /status and the metrics.
type Stats struct {
	Entries  int64 `json:"entries"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
	// Hits and Misses count Gets, never Peeks: one per request that looked
	// for a code, so they match cache_requests_total (hit; miss plus
	// collapsed).
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Stored    uint64 `json:"stored"`
	Rejected  uint64 `json:"rejected"`
	Evictions uint64 `json:"evictions"`
}

// Stats reports the counters; cheap enough for every scrape.
func (m *Memory) Stats() Stats {
	maxCost := m.r.MaxCost()
	return Stats{
		Entries:   max(m.entries.Load(), 0),
		Bytes:     maxCost - m.r.RemainingCost(),
		MaxBytes:  maxCost,
		Hits:      m.hits.Load(),
		Misses:    m.misses.Load(),
		Stored:    m.stored.Load(),
		Rejected:  m.rejected.Load(),
		Evictions: m.evictions.Load(),
	}
}

// GCPercent is the GOGC the sidecar runs with when GOGC is unset. The
// memory limit below bounds the heap anyway, so the collector need not run
// every time the (small, when the cache is cold) live heap doubles: on the
// cache-hit path, GC was a measurable part of the CPU (BENCHMARKS.md).
const GCPercent = 400

// MemoryLimit is the soft memory limit (debug.SetMemoryLimit) the sidecar
// sets when GOMEMLIMIT is not: by default Go lets the heap grow to twice
// what is live before collecting, so a full cache could double the resident
// memory. The limit keeps the heap near the cache's size plus a working
// margin for buffers in flight and the runtime.
func MemoryLimit(maxBytes int64) int64 {
	return maxBytes + maxBytes/8 + 24<<20
}
