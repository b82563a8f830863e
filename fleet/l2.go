package fleet

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// L2Options configures NewL2.
type L2Options struct {
	// TTL is how long Redis keeps an image: CACHE_TTL. 0 is 24h.
	TTL time.Duration
	// Logger receives the corrupt entries found (and deleted); nil is the
	// client's logger.
	Logger *slog.Logger
}

// L2 is the shared image tier (cache.Shared) on the fleet's Redis: after
// L1 misses, every replica looks here before it asks WeChat, and stores
// here what it fetched. Each value carries the sha256 of what it holds,
// checked on every read: a value that fails the check (a flipped bit, a
// truncated write, a foreign value under our key) is a miss, logged and
// deleted, never an image served. Every call goes through Client.Do, so a
// Redis slow or down is a miss (a fault, which codes treats as one).
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
// value that failed its check), another error for a fault of Redis.
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
	e, err := decodeEntry(value)
	if errors.Is(err, errOtherFormat) {
		// Another version of the sidecar's: a miss, left for it.
		return nil, cache.ErrNotFound
	}
	if err != nil {
		l.log.Warn("shared tier: an image entry failed its check; deleted, counted as a miss",
			"app", app, "key", key, "error", err.Error(), "bytes", len(value))
		l.deleteIfStill(ctx, key, value)
		return nil, cache.ErrNotFound
	}
	return e, nil
}

// Set stores e under k for the TTL, or until e.Until when it has one (a
// link: Redis drops it then, on its own clock); an entry already past its
// Until is not stored.
func (l *L2) Set(ctx context.Context, app string, k cache.Key, e *cache.Entry) error {
	ttl := l.ttl
	if !e.Until.IsZero() {
		if ttl = time.Until(e.Until); ttl < time.Millisecond {
			return nil
		}
	}
	key := imageKey(l.c, app, k)
	value := encodeEntry(e)
	err := l.c.Do(ctx, OpL2Set, func(ctx context.Context) error {
		return l.c.rdb.Set(ctx, key, value, ttl).Err()
	})
	if err != nil {
		return fmt.Errorf("fleet: l2 set: %w", err)
	}
	return nil
}

// deleteIfStillScript deletes KEYS[1] only while it holds the value whose
// sha1 is ARGV[1]: a good image another replica wrote over the bad one
// meanwhile stays (and the bad value is not sent back to compare).
var deleteIfStillScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and redis.sha1hex(v) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

func (l *L2) deleteIfStill(ctx context.Context, key string, value []byte) {
	sum := sha1.Sum(value)
	err := l.c.Do(ctx, OpL2Set, func(ctx context.Context) error {
		return deleteIfStillScript.Run(ctx, l.c.rdb, []string{key}, hex.EncodeToString(sum[:])).Err()
	})
	if err != nil {
		// It fails its check again on the next read, and expires anyway.
		l.log.Debug("shared tier: could not delete a corrupt entry", "key", key, "error", err.Error())
	}
}

// The stored form of an entry: a format byte, the sha256 of everything
// after the digest, then the content type and disposition, each after its
// length as a uvarint, then the body to the end. The digest covers the
// headers too: a flipped byte there is as wrong as one in the body. An
// entry with an Until (a link) is format 0x11, format 1 with an Until: the
// Until, in Unix milliseconds as 8 bytes big-endian, comes right after the
// digest. A replica that knows only format 1 reads it as another version's
// and leaves it alone.
const (
	entryFormat      = 1
	entryFormatUntil = 0x11
	digestEnd        = 1 + sha256.Size
)

var errOtherFormat = errors.New("fleet: an entry of another format")

func encodeEntry(e *cache.Entry) []byte {
	b := make([]byte, digestEnd, digestEnd+8+2*binary.MaxVarintLen64+len(e.ContentType)+len(e.ContentDisposition)+len(e.Body))
	b[0] = entryFormat
	if !e.Until.IsZero() {
		b[0] = entryFormatUntil
		b = binary.BigEndian.AppendUint64(b, uint64(e.Until.UnixMilli()))
	}
	b = binary.AppendUvarint(b, uint64(len(e.ContentType)))
	b = append(b, e.ContentType...)
	b = binary.AppendUvarint(b, uint64(len(e.ContentDisposition)))
	b = append(b, e.ContentDisposition...)
	b = append(b, e.Body...)
	sum := sha256.Sum256(b[digestEnd:])
	copy(b[1:digestEnd], sum[:])
	return b
}

func decodeEntry(b []byte) (*cache.Entry, error) {
	if len(b) < digestEnd {
		return nil, errors.New("fleet: entry shorter than its digest")
	}
	if b[0] != entryFormat && b[0] != entryFormatUntil {
		return nil, errOtherFormat
	}
	sum := sha256.Sum256(b[digestEnd:])
	if !bytes.Equal(sum[:], b[1:digestEnd]) {
		return nil, errors.New("fleet: entry does not match its sha256")
	}
	rest := b[digestEnd:]
	var until time.Time
	if b[0] == entryFormatUntil {
		if len(rest) < 8 {
			return nil, errors.New("fleet: entry framing is broken")
		}
		until = time.UnixMilli(int64(binary.BigEndian.Uint64(rest)))
		rest = rest[8:]
	}
	contentType, rest, err := readField(rest)
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
