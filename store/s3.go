package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// s3 is the bucket backend, on minio-go: one client for AWS S3, Tencent
// COS, Aliyun OSS, MinIO, Ceph and the rest. Objects are
// PREFIX/APPID/KEYHEX.
type s3 struct {
	c        *minio.Client
	t        *http.Transport
	bucket   string
	prefix   string
	endpoint string
}

// The S3 error codes that mean "this store cannot be used as configured":
// a retry will not mend them, a person must.
var refusals = map[string]bool{
	"NoSuchBucket": true, "AccessDenied": true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"InvalidBucketName": true, "AllAccessDisabled": true, "AuthorizationHeaderMalformed": true,
	"PermanentRedirect": true, "InvalidToken": true, "ExpiredToken": true,
}

func newS3(u *url.URL, o Options) (*s3, error) {
	if u.Host == "" {
		return nil, errors.New("store: STORE_URL: s3:// needs a bucket: s3://BUCKET/PREFIX")
	}
	host, secure := "s3.amazonaws.com", true
	if o.Endpoint != "" {
		e, err := url.Parse(o.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || strings.Trim(e.Path, "/") != "" {
			return nil, errors.New("store: STORE_ENDPOINT: want http(s)://HOST[:PORT], e.g. https://cos.ap-guangzhou.myqcloud.com")
		}
		host, secure = e.Host, e.Scheme == "https"
	}
	var creds *credentials.Credentials
	if o.AccessKey != "" || o.SecretKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	} else {
		// The standard chain: the environment, then web identity (IRSA)
		// or the container's or instance's role.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{},
			&credentials.IAM{Client: &http.Client{Timeout: 5 * time.Second}},
		})
	}
	t, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// Each operation is bounded by its context (STORE_TIMEOUT); these
	// bound what a context cannot reach.
	t.DialContext = (&net.Dialer{Timeout: max(o.Timeout, time.Second), KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = max(o.Timeout, 2*time.Second)
	t.MaxIdleConnsPerHost = 32
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: o.Region, Transport: t,
		BucketLookupViaURL: bucketLookup,
		// One try per operation: the default of 10, with its backoff,
		// could never fit STORE_TIMEOUT; the breaker and the write queue
		// do the retrying.
		MaxRetries: 1})
	if err != nil {
		return nil, fmt.Errorf("store: S3 client: %w", err)
	}
	return &s3{c: c, t: t, bucket: u.Host, prefix: strings.Trim(u.Path, "/"), endpoint: host}, nil
}

// virtualHostOnly are providers that want the bucket in the host name
// (BUCKET.cos.REGION.myqcloud.com) and which minio-go does not know as such
// (it knows AWS, Google and Aliyun OSS); every other endpoint is left to
// its detection (path style for MinIO, Ceph and the like).
var virtualHostOnly = []string{".myqcloud.com", ".myhuaweicloud.com"}

func bucketLookup(u url.URL, _ string) minio.BucketLookupType {
	for _, suffix := range virtualHostOnly {
		if strings.HasSuffix(u.Hostname(), suffix) {
			return minio.BucketLookupDNS
		}
	}
	return minio.BucketLookupAuto
}

func (b *s3) name(app string, k cache.Key) string { return objectName(b.prefix, app, k) }

func (b *s3) get(ctx context.Context, name string) ([]byte, error) {
	obj, err := b.c.GetObject(ctx, b.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, b.fault(err)
	}
	defer obj.Close()
	body, err := readAll(obj, make([]byte, 0, 64<<10))
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, err
		}
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, errNotFound
		}
		return nil, b.fault(err)
	}
	return body, nil
}

func (b *s3) put(ctx context.Context, name string, data []byte) error {
	_, err := b.c.PutObject(ctx, b.bucket, name, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	if err != nil {
		return b.fault(err)
	}
	return nil
}

// check asks whether the bucket exists and the credentials may see it.
func (b *s3) check(ctx context.Context) error {
	ok, err := b.c.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.fault(err)
	}
	if !ok {
		return fmt.Errorf("%w: bucket %q does not exist at %s (create it, private, with the lifecycle rule docs/store.md shows)",
			errRefused, b.bucket, b.endpoint)
	}
	return nil
}

// fault names what the store answered, marking refusals.
func (b *s3) fault(err error) error {
	r := minio.ToErrorResponse(err)
	switch {
	case refusals[r.Code]:
		return fmt.Errorf("%w: %s (%s) for bucket %q at %s", errRefused, r.Code, r.Message, b.bucket, b.endpoint)
	case r.Code != "":
		return fmt.Errorf("%s (%s)", r.Code, r.Message)
	}
	return err
}

func (b *s3) status(st *Status) { st.Endpoint = b.endpoint }

func (b *s3) close() { b.t.CloseIdleConnections() }
