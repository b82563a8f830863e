package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/token"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// forceDaySlack keeps a day's force_refresh count a little past its
// midnight, for a replica whose clock runs behind and still counts that
// day; the key carries the day, so the next day never reads it.
const forceDaySlack = time.Minute

// Polling for the token lease: a classic fetch is one HTTP call, so the
// wait starts short and grows, with jitter so waiters do not poll in step.
const (
	leasePollMin = 10 * time.Millisecond
	leasePollMax = 200 * time.Millisecond
)

// defaultTokenLeaseTTL is a lease's life when the caller gives none.
const defaultTokenLeaseTTL = 30 * time.Second

// TokenStore is token.Store on the fleet's Redis: the app's current token
// (wxa:{appid}:token, until its expiry), the classic fetch's lease
// (wxa:{appid}:token-lease) and the force_refresh count
// (wxa:{appid}:force:YYYYMMDD and wxa:{appid}:force-last). Every call goes
// through Client.Do as op "token"; any failure is returned as a fault, and
// the token.Manager carries on from its own memory. The token is sealed
// with the app's key (sealed.go): a Redis reader never sees it, and a
// value a writer forged or moved there is no token. Its errors never carry
// a token, a secret or the password.
//
// Safe for concurrent use.
type TokenStore struct {
	c *Client
}

var _ token.Store = (*TokenStore)(nil)

// NewTokenStore returns the store on c. Token lifetimes and the
// force_refresh day are read on c's clock (Options.Now).
func NewTokenStore(c *Client) *TokenStore { return &TokenStore{c: c} }

// String names the store in token.Manager's Status: never the URL, which
// may hold the password.
func (s *TokenStore) String() string { return "redis" }

// storedToken is a token as Redis keeps it.
type storedToken struct {
	Value     string    `json:"token"`
	Expiry    time.Time `json:"expiry"`
	FetchedAt time.Time `json:"fetched_at,omitzero"`
}

// Load implements token.Store: token.ErrNoToken on a miss, a value that
// does not open, or a token that is not one WeChat issues (its characters,
// its length); a fault on anything else. An expiry beyond a token's
// longest life is clamped to it.
func (s *TokenStore) Load(ctx context.Context, appID string) (token.Token, error) {
	key := s.c.Key(appID, "token")
	var raw []byte
	err := s.c.Do(ctx, OpToken, func(ctx context.Context) error {
		var err error
		raw, err = s.c.Redis().Get(ctx, key).Bytes()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		return token.Token{}, token.ErrNoToken
	case err != nil:
		return token.Token{}, fmt.Errorf("fleet: token store: load: %w", err)
	}
	plain, ok := s.c.open(UnsealedToken, appID, raw, key)
	if !ok {
		// Left for the next Save to overwrite: the Manager fetches.
		return token.Token{}, token.ErrNoToken
	}
	var st storedToken
	if err := json.Unmarshal(plain, &st); err != nil || !token.ValidValue(st.Value) {
		// Never the value in a log or an error: it is, or holds, a token.
		s.c.unsealed(UnsealedToken)
		return token.Token{}, token.ErrNoToken
	}
	now := s.c.now()
	if longest := now.Add(maxTokenLife); st.Expiry.After(longest) {
		st.Expiry = longest
	}
	if st.FetchedAt.After(now) {
		st.FetchedAt = now
	}
	return token.Token{Value: st.Value, Expiry: st.Expiry, FetchedAt: st.FetchedAt}, nil
}

// maxTokenLife is the longest life WeChat gives a token (expires_in 7200).
const maxTokenLife = 7200 * time.Second

// Save implements token.Store: it overwrites, as MemoryStore does (in
// classic mode the lease makes saves take turns; in stable mode every
// replica is handed the same token), and Redis forgets the token when it
// expires. The token is sealed: Redis never holds it in clear.
func (s *TokenStore) Save(ctx context.Context, appID string, t token.Token) error {
	raw, err := json.Marshal(storedToken{Value: t.Value, Expiry: t.Expiry, FetchedAt: t.FetchedAt})
	if err != nil {
		return fmt.Errorf("fleet: token store: save: %w", err)
	}
	key := s.c.Key(appID, "token")
	sealed, err := s.c.seal(appID, raw, key)
	if err != nil {
		return fmt.Errorf("fleet: token store: save: %w", err)
	}
	ttl := min(max(t.Expiry.Sub(s.c.now()), time.Millisecond), maxTokenLife)
	err = s.c.Do(ctx, OpToken, func(ctx context.Context) error {
		return s.c.Redis().Set(ctx, key, sealed, ttl).Err()
	})
	if err != nil {
		return fmt.Errorf("fleet: token store: save: %w", err)
	}
	return nil
}

// allowForceScript checks and records one force_refresh in one step, so
// two replicas are never both allowed the last one. KEYS[1] is the day's
// count, KEYS[2] the time of the fleet's last force_refresh; ARGV: the
// daily limit, now in ms, the spacing in ms, the count's life in ms.
// Answers 0 (allowed, recorded), 1 (the day's limit is spent), 2 (too soon),
// 3 (a count above the limit, or a last force_refresh further ahead than
// the spacing: values no replica writes, so the caller decides from its
// own memory, as with Redis unreachable).
//
// The spacing is a fleet-wide lock that Redis drops after 30 s, holding
// the caller's time: a caller whose clock says 30 s have passed may take
// it earlier (tests drive that clock), a caller whose clock is behind the
// holder's waits for Redis to drop it.
var allowForceScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if not n or n < 0 or n > tonumber(ARGV[1]) then
	return 3
end
if n >= tonumber(ARGV[1]) then
	return 1
end
local last = redis.call('GET', KEYS[2])
if last then
	local ms = tonumber(last)
	if not ms or ms - tonumber(ARGV[2]) > tonumber(ARGV[3]) then
		return 3
	end
	if tonumber(ARGV[2]) - ms < tonumber(ARGV[3]) then
		return 2
	end
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 0
`)

// AllowForce implements token.Store: WeChat's 20 force_refresh a day per
// appid, the day in UTC+8, counted across the fleet, and 30 s between two.
func (s *TokenStore) AllowForce(ctx context.Context, appID string, now time.Time) (bool, string, error) {
	nextMidnight := wechat.NextMidnight(now)
	countKey := s.c.Key(appID, "force", now.In(wechat.ChinaTime).Format("20060102"))
	lastKey := s.c.Key(appID, "force-last")
	var answer int64
	err := s.c.Do(ctx, OpToken, func(ctx context.Context) error {
		var err error
		answer, err = allowForceScript.Run(ctx, s.c.Redis(), []string{countKey, lastKey},
			wechat.ForceRefreshesPerDay, now.UnixMilli(), wechat.ForceRefreshSpacing.Milliseconds(),
			(nextMidnight.Sub(now) + forceDaySlack).Milliseconds()).Int64()
		return err
	})
	if err == nil && answer == 3 {
		s.c.unsealed(UnsealedForce)
		err = errUnreadable
	}
	if err != nil {
		return false, "", fmt.Errorf("fleet: token store: allow force_refresh: %w", err)
	}
	switch answer {
	case 0:
		return true, "", nil
	case 1:
		return false, strconv.Itoa(wechat.ForceRefreshesPerDay) + " force refreshes today (UTC+8) across the fleet", nil
	default:
		return false, "the fleet's last force refresh was under 30s ago", nil
	}
}

// unlockScript deletes the lease only if the caller still holds it: a
// holder whose lease expired must not free its next holder's.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// Lock implements token.Store: SET NX PX with an owner of its own, polled
// with jitter until it is taken or ctx ends; the lease ends by itself after
// ttl. A failed poll is a fault (the Manager then fetches without the
// lease, as a replica alone would).
func (s *TokenStore) Lock(ctx context.Context, appID string, ttl time.Duration) (func(context.Context) error, error) {
	if ttl <= 0 {
		ttl = defaultTokenLeaseTTL
	}
	key := s.c.Key(appID, "token-lease")
	owner := newOwner()
	for wait := leasePollMin; ; wait = min(wait*2, leasePollMax) {
		var taken bool
		err := s.c.Do(ctx, OpToken, func(ctx context.Context) error {
			var err error
			taken, err = s.c.Redis().SetNX(ctx, key, owner, ttl).Result()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("fleet: token store: lease: %w", err)
		}
		if taken {
			break
		}
		timer := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("fleet: token store: lease: waiting for another replica's fetch: %w", ctx.Err())
		case <-timer.C:
		}
	}
	var once sync.Once
	return func(ctx context.Context) error {
		var err error
		once.Do(func() {
			// Not held to the request's budget: a holder whose Save
			// failed must still free the lease, or every other replica
			// waits it out (Flight.release does the same).
			err = s.c.Do(withoutBudget(ctx), OpToken, func(ctx context.Context) error {
				return unlockScript.Run(ctx, s.c.Redis(), []string{key}, owner).Err()
			})
			if err != nil {
				err = fmt.Errorf("fleet: token store: release the lease: %w", err)
			}
		})
		return err
	}, nil
}
