package store

import (
	"log/slog"
	"time"
)

// Ops, the bounded values of the metrics' op label.
const (
	OpGet = "get"
	OpPut = "put"
)

// Results, the bounded values of the metrics' result label. A get is hit,
// miss (absent or expired), corrupt (an object that does not open or
// decode: swapped, truncated, forged, or sealed under another key) or a
// fault; a put is ok or a fault.
const (
	ResultHit         = "hit"
	ResultMiss        = "miss"
	ResultCorrupt     = "corrupt"
	ResultOK          = "ok"
	ResultError       = "error"
	ResultTimeout     = "timeout"
	ResultBreakerOpen = "breaker_open"
)

// Drop reasons, the values of write_drops_total's reason label.
const (
	DropFull     = "queue_full" // the queue was full: the write was never queued
	DropFailed   = "failed"     // every attempt failed
	DropShutdown = "shutdown"   // still queued when the exit bound ran out
)

// Ops, Results and DropReasons list every value, for metrics that start at
// zero.
var (
	Ops         = []string{OpGet, OpPut}
	Results     = []string{ResultHit, ResultMiss, ResultCorrupt, ResultOK, ResultError, ResultTimeout, ResultBreakerOpen}
	DropReasons = []string{DropFull, DropFailed, DropShutdown}
)

// Defaults of Options.
const (
	DefaultTimeout  = 500 * time.Millisecond
	DefaultMaxBytes = 10 << 30
	// DefaultQueue bounds the writes waiting to be made: about 25 MiB of
	// images of 50 KB at the most.
	DefaultQueue = 512
)

// Hooks report what the store does; nil fields are no-ops. They must not
// block.
type Hooks struct {
	// Request is called once per operation tried or skipped.
	Request func(op, result string, d time.Duration)
	// Up is called when the store is found usable or not.
	Up func(up bool)
	// Dropped is called for each write given up, with its reason.
	Dropped func(reason string)
}

// Options configures Open.
type Options struct {
	// URL is STORE_URL: file:///DIR or s3://BUCKET[/PREFIX]. Required.
	URL string
	// Endpoint is the S3 endpoint (STORE_ENDPOINT), as a URL:
	// https://cos.ap-guangzhou.myqcloud.com, http://minio:9000; empty is
	// AWS.
	Endpoint string
	// Region is STORE_REGION; empty lets the client ask the bucket.
	Region string
	// AccessKey and SecretKey, when set, are the S3 credentials; else the
	// standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web
	// identity, the instance's role).
	AccessKey, SecretKey string
	// Timeout bounds each operation (STORE_TIMEOUT); 0 is DefaultTimeout.
	Timeout time.Duration
	// TTL, when above 0, is how long an object counts: an older one is a
	// miss (STORE_TTL). The directory prunes it; a bucket's lifecycle rule
	// does.
	TTL time.Duration
	// MaxBytes bounds the directory store (STORE_MAX_BYTES); 0 is
	// DefaultMaxBytes. The least recently used objects go first.
	MaxBytes int64
	// Secrets are the apps' secrets (appid → secret): each app's objects
	// are sealed with a key derived from its secret, unless Key is set.
	Secrets map[string]string
	// Key, when set, is the store's own key (STORE_KEY_FILE): each app's
	// key is derived from it instead, so a rotated app secret keeps the
	// store readable.
	Key []byte
	// Queue bounds the write-behind queue; 0 is DefaultQueue.
	Queue int
	// Logger receives the store's lines; nil discards.
	Logger *slog.Logger
	Hooks  Hooks
	// Now is the clock of the breaker, the TTL and the pruning; nil is
	// time.Now.
	Now func() time.Time
}
