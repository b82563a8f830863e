package fleet

import (
	"log/slog"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/seal"
)

// Ops, the bounded values of the metrics' op label.
const (
	OpL2Get     = "l2_get"
	OpL2Set     = "l2_set"
	OpLease     = "lease"
	OpRateLimit = "ratelimit"
	OpCooldown  = "cooldown"
	OpToken     = "token"
)

// Results, the bounded values of the metrics' result label.
const (
	ResultOK          = "ok"
	ResultMiss        = "miss"
	ResultError       = "error"
	ResultTimeout     = "timeout"
	ResultBreakerOpen = "breaker_open"
)

// Ops and Results list every op and result, for metrics that start at zero.
var (
	Ops     = []string{OpL2Get, OpL2Set, OpLease, OpRateLimit, OpCooldown, OpToken}
	Results = []string{ResultOK, ResultMiss, ResultError, ResultTimeout, ResultBreakerOpen}
)

// Hooks report what the client does; nil fields are no-ops.
type Hooks struct {
	// Request is called once per operation tried or skipped.
	Request func(op, result string, d time.Duration)
	// Up is called when Redis is found reachable or not.
	Up func(up bool)
	// Lease counts fleet leases: acquired, waited, timed_out.
	Lease func(result string)
	// Unsealed counts a value read from Redis and not believed, by kind
	// (Unsealed*): it did not open under the app's key at its place, or
	// what opened, or what a script must read in clear, is out of bounds.
	// Such a value is absent for its reader.
	Unsealed func(kind string)
}

// Options configures a Client.
type Options struct {
	// URL is REDIS_URL: redis://, rediss://, or a Cluster's URL with addr=
	// parameters. Required.
	URL string
	// Password, when set, wins over the URL's (REDIS_PASSWORD_FILE).
	Password string
	// CAFile adds a CA to verify a rediss:// server with.
	CAFile string
	// Prefix starts every key; default "wxa:".
	Prefix string
	// Timeout bounds each operation; default 100ms.
	Timeout time.Duration
	// Logger receives the client's own lines and go-redis's; default discard.
	Logger *slog.Logger
	Hooks  Hooks
	// Now is the clock of the breaker; default time.Now.
	Now func() time.Time
	// Keys seals every value the tier writes and opens every value it
	// reads, with the value's full key as the place: build it with
	// seal.NewKeyring(each app's secret, SealPurpose). An app it holds no
	// key for is never written, and nothing of its is believed. nil is a
	// key drawn by this process, shared by its Clients and by nobody
	// else: for tests and tools, never for a fleet (replicas could not
	// read each other's values).
	Keys *seal.Keyring
}

// SealPurpose is the purpose of the Keyring that seals the fleet's Redis
// values: keys for Redis open nothing sealed for another use.
const SealPurpose = "redis"

// Kinds of values not believed, the values of the Unsealed hook's kind.
const (
	UnsealedImage     = "image"         // an L2 image entry
	UnsealedFailure   = "failure"       // a lease holder's failure marker
	UnsealedCooldown  = "cooldown"      // a shared cool-down or its memory
	UnsealedRefusal   = "refusal"       // the 45029 memory of one request
	UnsealedToken     = "token"         // the app's stored token
	UnsealedRateLimit = "ratelimit"     // a GCRA instant beyond what the limit allows
	UnsealedLease     = "lease"         // a lease held by no owner the sidecar draws
	UnsealedForce     = "force_refresh" // a force_refresh count or instant out of bounds
)

// UnsealedKinds lists every kind, for metrics that start at zero.
var UnsealedKinds = []string{UnsealedImage, UnsealedFailure, UnsealedCooldown, UnsealedRefusal, UnsealedToken,
	UnsealedRateLimit, UnsealedLease, UnsealedForce}
