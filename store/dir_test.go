package store

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// dirBytes is what the files under root weigh, temporary ones included.
func dirBytes(t *testing.T, root string) (total int64, files int) {
	t.Helper()
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				total += info.Size()
				files++
			}
		}
		return nil
	})
	return total, files
}

func TestDirPruningKeepsTheBoundAndTheRecentlyUsed(t *testing.T) {
	root := t.TempDir()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	const maxBytes = 20 << 10
	s := open(t, Options{URL: "file://" + root, MaxBytes: maxBytes, Now: clock})
	body := strings.Repeat("x", 1000)
	ctx := context.Background()
	// The first one is asked again and again: it stays.
	first := keyOf("prune-0")
	for i := range 100 {
		k := keyOf(fmt.Sprint("prune-", i))
		s.Put(ctx, app, k, entry(body+fmt.Sprint(i)))
		flushed(t, s)
		// Files' mtimes are what the LRU order reads: two minutes a write.
		mu.Lock()
		now = now.Add(2 * time.Minute)
		mu.Unlock()
		if _, err := s.Get(ctx, app, first); err != nil {
			t.Fatalf("round %d: the most recently used object is gone: %v; %d pruned", i, err, s.b.(*dir).pruned.Load())
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		total, files := dirBytes(t, root)
		// The status's figure is set when a pruning ends.
		if total <= maxBytes && s.Status().Bytes <= maxBytes {
			if files < 5 {
				t.Errorf("pruned to %d files, %d bytes: far more than needed", files, total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the directory holds %d bytes in %d files; the bound is %d", total, files, maxBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustGet(t, s, app, first)
	mustGet(t, s, app, keyOf("prune-99"))
	wantMiss(t, s, app, keyOf("prune-1"), "the least recently used")
	if st := s.Status(); st.MaxBytes != maxBytes {
		t.Errorf("status %+v", st)
	}
}

// TestDirHalfWrittenFilesAreNeverRead: a crash leaves temporary files (a
// writer killed before its rename) and, at worst, a short final file; the
// first is never opened, the second never opens.
func TestDirHalfWrittenFilesAreNeverRead(t *testing.T) {
	root := t.TempDir()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := open(t, Options{URL: "file://" + root, Now: clock})
	ctx := context.Background()
	k := keyOf("half")
	s.Put(ctx, app, k, entry("whole"))
	flushed(t, s)
	p, _ := s.b.(*dir).path(s.b.name(app, k))
	whole, _ := os.ReadFile(p)
	// What a writer killed mid-write leaves: a temporary file beside.
	temp := filepath.Join(filepath.Dir(p), tempPrefix+"123")
	os.WriteFile(temp, whole[:10], 0o600)
	if got := mustGet(t, s, app, k); string(got.Body) != "whole" {
		t.Errorf("got %q", got.Body)
	}
	os.WriteFile(p, whole[:len(whole)-1], 0o600)
	wantMiss(t, s, app, k, "a short final file")
	// The pruning removes temporary files once no writer can own them.
	mu.Lock()
	now = now.Add(staleTemp + time.Minute)
	mu.Unlock()
	os.Chtimes(p, time.Time{}, now) // the object itself is recent
	s.b.(*dir).pruneOnce(ctx)
	if _, err := os.Stat(temp); err == nil {
		t.Error("a stale temporary file survived the pruning")
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("the pruning removed an object under the bound: %v", err)
	}
}

// TestDirSharedByTwoStores: two replicas on one directory read each
// other's objects and write the same ones at once without a broken file.
func TestDirSharedByTwoStores(t *testing.T) {
	root := t.TempDir()
	a := open(t, Options{URL: "file://" + root})
	b := open(t, Options{URL: "file://" + root})
	ctx := context.Background()
	for i := range 30 {
		k := keyOf(fmt.Sprint("shared-", i))
		a.Put(ctx, app, k, entry(fmt.Sprint("shared-", i)))
		b.Put(ctx, app, k, entry(fmt.Sprint("shared-", i)))
	}
	flushed(t, a)
	flushed(t, b)
	for i := range 30 {
		if got := mustGet(t, b, app, keyOf(fmt.Sprint("shared-", i))); string(got.Body) != fmt.Sprint("shared-", i) {
			t.Errorf("shared-%d: %q", i, got.Body)
		}
	}
	_, files := dirBytes(t, root)
	if files != 30 {
		t.Errorf("%d files for 30 objects: a temporary file was left", files)
	}
}

func TestDirThatCannotBeWrittenIsRefused(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	root := t.TempDir()
	os.Chmod(root, 0o500)
	t.Cleanup(func() { os.Chmod(root, 0o700) })
	var logs strings.Builder
	s := open(t, Options{URL: "file://" + root + "/store", Logger: newTestLogger(&logs)})
	deadline := time.Now().Add(10 * time.Second)
	for s.Status().Up {
		if time.Now().After(deadline) {
			t.Fatal("still up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "STORE_URL") {
		t.Errorf("log %s", logs.String())
	}
}

func TestOpenRefusesWhatNoRetryMends(t *testing.T) {
	for _, c := range []Options{
		{URL: "ftp://x"},
		{URL: "file://relative/dir"},
		{URL: "s3://"},
		{URL: "s3://b", Endpoint: "minio:9000"},
		{URL: "file:///tmp/x", Secrets: map[string]string{"../etc": "s"}},
	} {
		if c.Secrets == nil {
			c.Secrets = secrets
		}
		if _, err := Open(c); err == nil {
			t.Errorf("Open(%+v) succeeded", c)
		}
	}
}

func TestBucketLookupPutsTencentAndHuaweiBucketsInTheHost(t *testing.T) {
	for host, want := range map[string]minio.BucketLookupType{
		"cos.ap-guangzhou.myqcloud.com":     minio.BucketLookupDNS,
		"obs.cn-north-4.myhuaweicloud.com":  minio.BucketLookupDNS,
		"minio:9000":                        minio.BucketLookupAuto,
		"oss-cn-hangzhou.aliyuncs.com":      minio.BucketLookupAuto, // minio-go knows it
		"evil.myqcloud.com.example.com:443": minio.BucketLookupAuto,
	} {
		if got := bucketLookup(url.URL{Scheme: "https", Host: host}, "b"); got != want {
			t.Errorf("%s: %v, want %v", host, got, want)
		}
	}
}
