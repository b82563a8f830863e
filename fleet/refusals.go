package fleet

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/codes"
)

// RefusalsOptions configures NewRefusals.
type RefusalsOptions struct {
	// TTL is how long a 45029 is remembered for its key: CACHE_TTL. 0 is 24h.
	TTL time.Duration
	// Local is this replica's own memory, asked first and kept whatever
	// Redis does; nil is codes.LocalRefusals(TTL, nil).
	Local codes.Refusals
}

// Refusals is codes.Refusals across the fleet: a 45029 one replica heard
// for a key is answered by every replica without asking WeChat again. The
// shared memory is a key per refused request (TTL CACHE_TTL), read and
// written as cool-downs are (OpCooldown: it is a per-request cool-down);
// with Redis unreachable each replica keeps its own, as without a fleet.
type Refusals struct {
	c     *Client
	ttl   time.Duration
	local codes.Refusals
}

var _ codes.Refusals = (*Refusals)(nil)

// NewRefusals returns the fleet's memory of 45029s on c.
func NewRefusals(c *Client, o RefusalsOptions) *Refusals {
	if o.TTL <= 0 {
		o.TTL = 24 * time.Hour
	}
	if o.Local == nil {
		o.Local = codes.LocalRefusals(o.TTL, nil)
	}
	return &Refusals{c: c, ttl: o.TTL, local: o.Local}
}

func (r *Refusals) key(app string, k cache.Key) string {
	return r.c.Key(app, "refused", hex.EncodeToString(k[:]))
}

// Refused reports whether this replica or any other heard 45029 for k
// within the TTL; a Redis that cannot answer, or a value that does not
// open or names no time within the TTL, is "no".
func (r *Refusals) Refused(ctx context.Context, app string, k cache.Key) bool {
	if r.local.Refused(ctx, app, k) {
		return true
	}
	key := r.key(app, k)
	var value []byte
	err := r.c.Do(ctx, OpCooldown, func(ctx context.Context) error {
		var err error
		value, err = r.c.rdb.Get(ctx, key).Bytes()
		return err
	})
	if err != nil {
		return false
	}
	plain, ok := r.c.open(UnsealedRefusal, app, value, key)
	if !ok {
		return false
	}
	// "45029 until-Unix-ms": a refusal replayed after its TTL, or one
	// claiming more than a TTL, is not believed.
	code, until, found := strings.Cut(string(plain), " ")
	ms, err := strconv.ParseInt(until, 10, 64)
	now := r.c.now()
	if !found || code != refusalCode || err != nil || ms < now.UnixMilli() || ms > now.Add(r.ttl+refusalSlack).UnixMilli() {
		r.c.unsealed(UnsealedRefusal)
		return false
	}
	return true
}

// refusalCode is what a refusal's sealed value starts with.
const refusalCode = "45029"

// refusalSlack allows for the clocks of the replica that wrote a refusal
// and of the one reading it.
const refusalSlack = time.Minute

// Refuse remembers the 45029 here and, Redis willing, for the fleet,
// before the flight that heard it answers (and releases its lease).
func (r *Refusals) Refuse(ctx context.Context, app string, k cache.Key) {
	r.local.Refuse(ctx, app, k)
	key := r.key(app, k)
	until := r.c.now().Add(r.ttl).UnixMilli()
	value, err := r.c.seal(app, []byte(refusalCode+" "+strconv.FormatInt(until, 10)), key)
	if err != nil {
		return
	}
	r.c.Do(ctx, OpCooldown, func(ctx context.Context) error {
		return r.c.rdb.Set(ctx, key, value, r.ttl).Err()
	})
}
