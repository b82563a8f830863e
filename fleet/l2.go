package fleet

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// L2Options configures NewL2.
type L2Options struct {
	// TTL is how long Redis keeps an image: CACHE_TTL. 0 is 24h.
	TTL time.Duration
	// Logger receives what goes wrong; nil is the client's logger.
	Logger *slog.Logger
}

// L2 is the shared image tier (cache.Shared) on the fleet's Redis: after
// L1 misses, every replica looks here before it asks WeChat, and stores
// here what it fetched. Each value is sealed with the app's key for its
// own Redis key (see sealed.go): a value that does not open (a flipped
// bit, a truncated write, another code's entry moved here, a forgery) is
// a miss, counted, and left for the next fetch to overwrite, never an
// image served. Every call goes through Client.Do, so a Redis slow or down
// is a miss (a fault, which codes treats as one).
type L2 struct {
	c   *Client
	ttl time.Duration
	log *slog.Logger
}

var _ cache.Shared = (*L2)(nil)

// NewL2 returns the shared image tier on c.
func NewL2(c *Client, o L2Options) *L2 {
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = c.log
	}
	return &L2{c: c, ttl: o.TTL, log: o.Logger}
}

// imageKey is where an app's image for k lives; the flight polls the same.
func imageKey(c *Client, app string, k cache.Key) string {
	return c.Key(app, "img", hex.EncodeToString(k[:]))
}

// Get returns the image stored for k: cache.ErrNotFound for none (or a
// value that does not open), another error for a fault of Redis.
func (l *L2) Get(ctx context.Context, app string, k cache.Key) (*cache.Entry, error) {
	key := imageKey(l.c, app, k)
	var value []byte
	err := l.c.Do(ctx, OpL2Get, func(ctx context.Context) error {
		var err error
		value, err = l.c.rdb.Get(ctx, key).Bytes()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		return nil, cache.ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("fleet: l2 get: %w", err)
	}
	if len(value) == 0 || value[0] != entryFormat {
		// Another version's format, or not ours: a miss, left for the
		// next fetch to overwrite.
		l.c.unsealed(UnsealedImage)
		return nil, cache.ErrNotFound
	}
	plain, ok := l.c.open(UnsealedImage, app, value[1:], key)
	if !ok {
		return nil, cache.ErrNotFound
	}
	e, err := decodeEntry(plain)
	if err != nil {
		// Sealed by a replica holding the app's key, yet not an entry:
		// a bug of ours, not an attack.
		l.c.unsealed(UnsealedImage)
		l.log.Warn("shared tier: an authentic image entry does not decode; counted as a miss",
			"app", app, "key", key, "error", err.Error(), "bytes", len(value))
		return nil, cache.ErrNotFound
	}
	if !e.Until.IsZero() && !time.Now().Before(e.Until) {
		// A link past its reuse window: Redis drops it on its own clock
		// too; until then it is no answer.
		return nil, cache.ErrNotFound
	}
	return e, nil
}

// Set stores e under k for the TTL, or until e.Until when it has one (a
// link: Redis drops it then, on its own clock); an entry already past its
// Until is not stored. When Redis is out of reach, a write made under a
// fleet lease is owed: made as soon as Redis answers again, before the
// lease's release, so its waiters find the image instead of sitting out
// the lease and fetching it again.
func (l *L2) Set(ctx context.Context, app string, k cache.Key, e *cache.Entry) error {
	ttl := l.ttl
	if !e.Until.IsZero() {
		if ttl = time.Until(e.Until); ttl < time.Millisecond {
			return nil
		}
	}
	key := imageKey(l.c, app, k)
	sealed, err := l.c.seal(app, encodeEntry(e), key)
	if err != nil {
		return fmt.Errorf("fleet: l2 set: %w", err)
	}
	value := make([]byte, 1+len(sealed))
	value[0] = entryFormat
	copy(value[1:], sealed)
	set := func(ctx context.Context) error {
		return l.c.rdb.Set(ctx, key, value, ttl).Err()
	}
	err = l.c.Do(ctx, OpL2Set, set)
	if err != nil {
		if expires, ok := leaseExpiry(ctx); ok && unreachable(err) {
			l.c.owe(OpL2Set, expires, len(value), set)
		}
		return fmt.Errorf("fleet: l2 set: %w", err)
	}
	return nil
}

// The stored form of an entry: a format byte, then the entry sealed for
// its key (seal: version, nonce, ciphertext, tag). Sealed, an entry is its
// Until in Unix milliseconds as a uvarint (0: none, a code image), the
// content type and disposition, each after its length as a uvarint, then
// the body to the end. The format byte is outside the seal so that
// replicas of another version see "not mine" and leave it: format 1 (an
// unsealed entry with its sha256) was the version before.
const entryFormat = 2

func encodeEntry(e *cache.Entry) []byte {
	b := make([]byte, 0, 3*binary.MaxVarintLen64+len(e.ContentType)+len(e.ContentDisposition)+len(e.Body))
	var until uint64
	if !e.Until.IsZero() {
		until = uint64(max(e.Until.UnixMilli(), 1))
	}
	b = binary.AppendUvarint(b, until)
	b = binary.AppendUvarint(b, uint64(len(e.ContentType)))
	b = append(b, e.ContentType...)
	b = binary.AppendUvarint(b, uint64(len(e.ContentDisposition)))
	b = append(b, e.ContentDisposition...)
	return append(b, e.Body...)
}

func decodeEntry(b []byte) (*cache.Entry, error) {
	untilMilli, size := binary.Uvarint(b)
	if size <= 0 || untilMilli > math.MaxInt64 {
		return nil, errors.New("fleet: entry framing is broken")
	}
	var until time.Time
	if untilMilli != 0 {
		until = time.UnixMilli(int64(untilMilli))
	}
	contentType, rest, err := readField(b[size:])
	if err != nil {
		return nil, err
	}
	contentDisposition, body, err := readField(rest)
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, errors.New("fleet: entry without a body")
	}
	return cache.NewEntryUntil(body, contentType, contentDisposition, until), nil
}

func readField(b []byte) (field string, rest []byte, err error) {
	n, size := binary.Uvarint(b)
	if size <= 0 || n > uint64(len(b)-size) {
		return "", nil, errors.New("fleet: entry framing is broken")
	}
	end := size + int(n)
	return string(b[size:end]), b[end:], nil
}
