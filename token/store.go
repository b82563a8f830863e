package token

import (
	"context"
	"errors"
	"time"
)

// ErrNoToken is Store.Load's answer when no token is stored for the app:
// a miss, not a fault.
var ErrNoToken = errors.New("token: no token in the store")

// A Store keeps an app's current token and its force_refresh count where
// every Manager sharing it sees them: replicas in classic mode then use one
// token instead of killing each other's, and WeChat's 20 force refreshes a
// day are counted per app, not per replica.
//
// A Store must be safe for concurrent use by multiple goroutines. A Token it
// returns must not be modified. Any error but ErrNoToken is a fault: the
// Manager logs it and carries on from its own memory, exactly as a Manager
// without a shared store would, so a failing store never fails a caller a
// local Manager could serve. Errors must never carry a token or a secret.
type Store interface {
	// Load returns the app's stored token, which may have expired (the
	// Manager checks), or ErrNoToken.
	Load(ctx context.Context, appID string) (Token, error)
	// Save makes t the app's current token for every Manager sharing the
	// store. The last Save wins: in classic mode Lock makes fetches, and so
	// saves, take turns.
	Save(ctx context.Context, appID string, t Token) error
	// AllowForce reports whether WeChat's limit on force_refresh allows one
	// at now and, if so, records it in the same step, so two replicas can
	// never both be allowed the last one: per appid at most
	// wechat.ForceRefreshesPerDay in the day of wechat.ChinaTime holding
	// now (the count starts again at its midnight, not 24 h after the
	// first), and wechat.ForceRefreshSpacing apart. reason says why not,
	// for a log line and the caller's error.
	AllowForce(ctx context.Context, appID string, now time.Time) (allowed bool, reason string, err error)
	// Lock blocks until the caller holds the app's fetch lease, the only
	// one in the fleet allowed to fetch a classic token, and returns the
	// function that gives it back. A lease whose holder never gives it back
	// ends by itself after ttl, the longest one fetch can take. The Manager
	// bounds its wait with ctx and, after taking the lease, loads the store
	// again before fetching: the previous holder has usually saved a token.
	Lock(ctx context.Context, appID string, ttl time.Duration) (unlock func(context.Context) error, err error)
}
