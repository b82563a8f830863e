// Package fleet is the shared tier: one Redis client for every replica of
// the sidecar, so that a fleet spends WeChat's quota as one sidecar would.
// It owns the client (URL, password, TLS), the circuit breaker, the
// per-request budget and the Redis metrics, and what runs on it: the L2
// image cache (cache.Shared), the fleet-wide lease of a code's fetch
// (codes.Flight), the global rate limit and cool-downs (quota.Gate) and
// the token store (token.Store).
//
// Redis is never a reason to fail a request: every operation is bounded by
// REDIS_TIMEOUT, a request that met one failure skips Redis for the rest of
// its life, and an open breaker makes the sidecar the single replica it
// would be without Redis. It never imports proxy/ or net/http/httputil, and
// never logs or reports the password.
package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/wxa-sidecar/wxa-sidecar/internal/breaker"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/wxa-sidecar/wxa-sidecar/internal/neterr"
)

// Breaker policy: open after this many consecutive failures, let one probe
// through after the cool-off (internal/breaker).
const (
	breakerThreshold = breaker.Threshold
	breakerCoolOff   = breaker.CoolOff
)

// Client is the fleet's Redis. Safe for concurrent use.
type Client struct {
	rdb     redis.UniversalClient
	addr    string
	cluster bool
	prefix  string
	timeout time.Duration
	log     *slog.Logger
	hooks   Hooks
	now     func() time.Time
	breaker breaker.Breaker
	// owed is what this replica owes the fleet from while Redis was
	// unreachable: leases to release, images to store (owed.go).
	owed      owedQueue
	closeOnce sync.Once
	keys      sealer
	// answered: Redis has answered this client at least once.
	answered atomic.Bool
}

// setLoggerOnce: go-redis has one process-wide logger.
var setLoggerOnce sync.Once

// New builds the client; it does not dial (a replica started while Redis
// is down starts and serves).
func New(o Options) (*Client, error) {
	if o.Prefix == "" {
		o.Prefix = "wxa:"
	}
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Client{prefix: o.Prefix, timeout: o.Timeout, log: o.Logger, hooks: o.Hooks, now: o.Now}
	c.owed.closed = make(chan struct{})
	c.keys = &processKeys
	if o.Keys != nil {
		c.keys = o.Keys
	}
	c.breaker.Now = o.Now
	var tlsConfig *tls.Config
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fleet: REDIS_CA_FILE: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("fleet: REDIS_CA_FILE holds no PEM certificate")
		}
		tlsConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, errors.New("fleet: REDIS_URL does not parse") // never echo it: it may hold the password
	}
	if u.Query().Has("addr") {
		opt, err := redis.ParseClusterURL(o.URL)
		if err != nil {
			return nil, errors.New("fleet: REDIS_URL is not a valid Cluster URL")
		}
		if err := tune(tunable{&opt.Password, &opt.TLSConfig, &opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout,
			&opt.PoolTimeout, &opt.MaxRetries, &opt.DialerRetries, &opt.MaintNotificationsConfig, &opt.DisableIdentity},
			o, tlsConfig); err != nil {
			return nil, err
		}
		opt.MaxRedirects = 2
		c.rdb = redis.NewClusterClient(opt)
		c.addr, c.cluster = strings.Join(opt.Addrs, ","), true
	} else {
		opt, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, errors.New("fleet: REDIS_URL is not a valid redis:// or rediss:// URL")
		}
		if err := tune(tunable{&opt.Password, &opt.TLSConfig, &opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout,
			&opt.PoolTimeout, &opt.MaxRetries, &opt.DialerRetries, &opt.MaintNotificationsConfig, &opt.DisableIdentity},
			o, tlsConfig); err != nil {
			return nil, err
		}
		c.rdb = redis.NewClient(opt)
		c.addr = opt.Addr
	}
	setLoggerOnce.Do(func() { redis.SetLogger(slogLogger{o.Logger}) })
	return c, nil
}

// tunable are the fields the sidecar sets alike on a single node's and a
// Cluster's go-redis options, which are two types.
type tunable struct {
	password                *string
	tls                     **tls.Config
	dial, read, write, pool *time.Duration
	retries, dialerRetries  *int
	maint                   **maintnotifications.Config
	disableIdentity         *bool
}

// tune sets what the sidecar wants of either client: REDIS_PASSWORD_FILE's
// password over the URL's, a server always verified (with REDIS_CA_FILE's
// CA when given), one timeout for every step, and no retries of its own:
// fail fast and let the breaker decide (go-redis's default dial retries
// take 1.7 s against a refused port). No maintenance notifications, no
// CLIENT SETINFO.
func tune(t tunable, o Options, ca *tls.Config) error {
	if o.Password != "" {
		*t.password = o.Password
	}
	if *t.tls != nil && (*t.tls).InsecureSkipVerify {
		return errSkipVerify
	}
	if ca != nil {
		if *t.tls == nil {
			return errCAWithoutTLS
		}
		(*t.tls).RootCAs = ca.RootCAs
	}
	*t.dial, *t.read, *t.write, *t.pool = o.Timeout, o.Timeout, o.Timeout, poolTimeout(o.Timeout)
	*t.retries, *t.dialerRetries = -1, 1
	*t.maint = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	*t.disableIdentity = true
	return nil
}

// poolTimeout is how long an operation waits for a free connection: half
// its timeout, so that a wait for the pool ends in redis.ErrPoolTimeout
// (this replica's overload) before the operation's deadline would end it
// as a timeout (Redis's failure).
func poolTimeout(timeout time.Duration) time.Duration { return max(timeout/2, time.Millisecond) }

// errCAWithoutTLS: a CA asked for verification that a plaintext redis://
// URL would silently skip.
var errCAWithoutTLS = errors.New("fleet: REDIS_CA_FILE is set but REDIS_URL is not rediss://: the CA would verify nothing")

// errSkipVerify: a rediss:// server whose certificate is not verified is
// anyone on the path; config refuses it first, this is the last guard.
var errSkipVerify = errors.New("fleet: REDIS_URL turns off the verification of the Redis server's certificate (skip_verify): not allowed")

// slogLogger routes go-redis's own lines through slog (JSON like all else).
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// Close closes the connections; what the replica still owes the fleet is
// dropped (Settle first to pay it).
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.owed.mu.Lock()
		close(c.owed.closed)
		c.owed.mu.Unlock()
	})
	return c.rdb.Close()
}

// Status is the shared tier for /status: never the password.
type Status struct {
	Addr    string `json:"addr"`
	Cluster bool   `json:"cluster,omitempty"`
	Up      bool   `json:"up"`
	Breaker string `json:"breaker"`
}

// Status reports the address, whether Redis answered lately, and the
// breaker's state.
func (c *Client) Status() Status {
	state := c.breaker.State()
	return Status{Addr: c.addr, Cluster: c.cluster, Up: state == "closed", Breaker: state}
}

// Key is prefix + "{" + app + "}:" + parts joined by ":": the app in a
// hash tag, so a Cluster keeps an app's keys on one shard.
func (c *Client) Key(app string, parts ...string) string {
	var b strings.Builder
	b.WriteString(c.prefix)
	b.WriteByte('{')
	b.WriteString(app)
	b.WriteByte('}')
	for _, p := range parts {
		b.WriteByte(':')
		b.WriteString(p)
	}
	return b.String()
}

// Redis is the client, for the tier's parts; call it only inside Do.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }

// ErrSkipped is what Do returns when it did not try Redis: the breaker is
// open, or this request already met a Redis failure. Callers treat it as
// any failure: as if there were no shared tier.
var ErrSkipped = errors.New("fleet: redis skipped")

// Do runs f as one Redis operation op: skipped when the breaker is open or
// the request's budget is spent, bounded by the timeout, reported, and
// recorded in the breaker. f returns redis.Nil for a miss.
func (c *Client) Do(ctx context.Context, op string, f func(ctx context.Context) error) error {
	b := budgetOf(ctx)
	if b != nil && b.spent.Load() {
		return ErrSkipped
	}
	if !c.breaker.Allow() {
		c.report(op, ResultBreakerOpen, 0)
		return ErrSkipped
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	start := c.now()
	err := f(ctx)
	d := c.now().Sub(start)
	switch {
	case err == nil:
		c.report(op, ResultOK, d)
		c.success()
	case errors.Is(err, redis.Nil):
		c.report(op, ResultMiss, d)
		c.success()
	case refusedCredentials(err) != "":
		// Redis answered, but it will not serve this sidecar (a wrong
		// password, a user without the commands we need): as good as
		// down, and it stays so until someone fixes the credentials.
		c.report(op, ResultError, d)
		c.failure(ctx, b, op, err)
	case isReply(err):
		// Redis answered (WRONGTYPE, OOM, a script error): it is
		// reachable, so neither the breaker nor the request's budget is
		// charged; the caller still treats the call as failed.
		c.report(op, ResultError, d)
		c.success()
	case errors.Is(err, redis.ErrPoolTimeout):
		// Every connection was busy for this replica's own requests:
		// this replica's overload, not Redis's failure, so the breaker
		// is not charged (it would take the fleet's limits and cache
		// away from a replica for being busy). The request still skips
		// Redis from now on, which relieves the pool.
		c.report(op, ResultTimeout, d)
		if b != nil {
			b.spent.Store(true)
		}
	default:
		result := ResultError
		if neterr.IsTimeout(err) {
			result = ResultTimeout
		}
		c.report(op, result, d)
		c.failure(ctx, b, op, err)
	}
	return err
}

// failure charges a failed operation to the request's budget and the
// breaker, and says so when the breaker opens: at ERROR, naming the cause,
// when Redis refuses our credentials (nothing heals that but an operator),
// else at WARN. The password is never in the line: Redis's own answer
// (NOAUTH, WRONGPASS, NOPERM) does not carry it.
func (c *Client) failure(ctx context.Context, b *budget, op string, err error) {
	if b != nil {
		b.spent.Store(true)
	}
	if !c.breaker.Failure() {
		return
	}
	if cause := refusedCredentials(err); cause != "" {
		c.log.ErrorContext(ctx, "redis refuses this sidecar's credentials ("+cause+"): check the user and password of REDIS_URL or REDIS_PASSWORD_FILE and the user's ACL; the shared tier is off, each replica serves alone",
			"op", op, "cause", cause, "error", err.Error(), "probe_after", breakerCoolOff.String())
	} else {
		c.log.WarnContext(ctx, "redis unreachable: the shared tier is off until a probe succeeds; each replica serves alone",
			"op", op, "error", err.Error(), "probe_after", breakerCoolOff.String())
	}
	if c.hooks.Up != nil {
		c.hooks.Up(false)
	}
}

// refusedCredentials is NOAUTH, WRONGPASS or NOPERM when err is Redis
// refusing this client's credentials or their rights, else "".
func refusedCredentials(err error) string {
	var re redis.Error
	if !errors.As(err, &re) {
		return ""
	}
	msg := re.Error()
	for _, cause := range []string{"NOAUTH", "WRONGPASS", "NOPERM"} {
		if strings.HasPrefix(msg, cause+" ") || msg == cause {
			return cause
		}
	}
	return ""
}

func (c *Client) success() {
	c.answered.Store(true)
	if c.breaker.Success() {
		c.log.Info("redis reachable again: the shared tier is back")
		if c.hooks.Up != nil {
			c.hooks.Up(true)
		}
	}
}

// Answered reports whether Redis has answered this client since it was
// made: false for a replica started while Redis is out of reach.
func (c *Client) Answered() bool { return c.answered.Load() }

func (c *Client) report(op, result string, d time.Duration) {
	if c.hooks.Request != nil {
		c.hooks.Request(op, result, d)
	}
}

// Lease reports a fleet lease's result to the hooks.
func (c *Client) Lease(result string) {
	if c.hooks.Lease != nil {
		c.hooks.Lease(result)
	}
}

// isReply reports an error Redis itself answered, as opposed to no answer.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// budget is one request's allowance of Redis failures: one.
type budget struct{ spent atomic.Bool }

type budgetKey struct{}

// Scope gives ctx a budget of its own unless it has one: after one failed
// or timed-out Redis operation, the rest of that request skips Redis, so a
// request spends at most about two REDIS_TIMEOUTs on a Redis that hangs.
func Scope(ctx context.Context) context.Context {
	if budgetOf(ctx) != nil {
		return ctx
	}
	return context.WithValue(ctx, budgetKey{}, new(budget))
}

func budgetOf(ctx context.Context) *budget {
	b, _ := ctx.Value(budgetKey{}).(*budget)
	return b
}
