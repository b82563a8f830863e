package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

// Directory store policy.
const (
	// tempPrefix starts the name of a file being written; a reader never
	// opens one (it opens final names only), and the pruning removes those
	// a crash left behind once they are older than staleTemp (another
	// replica sharing the directory may be writing one right now).
	tempPrefix = ".tmp-"
	staleTemp  = 10 * time.Minute
	// pruneEvery is how often the directory is scanned even when no
	// write of this replica's crossed the bound: another replica sharing
	// it writes too, and objects age past STORE_TTL.
	pruneEvery = time.Minute
	// pruneTo: a pruning that finds the directory over its bound removes
	// the least recently used objects until it holds at most this share of
	// it, so it is not woken again by the very next write.
	pruneTo = 0.9
	// touchAfter: a hit moves an object to the front of the LRU order (its
	// mtime) only if it was last touched longer ago than this: one
	// metadata write per object per minute at the most.
	touchAfter = time.Minute
)

// dir is the directory backend: one file per object, under
// ROOT/APPID/KK/KEYHEX (KK the key's first byte in hex, so no directory
// holds more than 1/256 of an app's objects). A file is written under a
// temporary name in its final directory, synced, then renamed: a reader
// sees the whole object or none, after a crash too, and two replicas
// sharing the directory at worst write the same object twice. The least
// recently used order is the files' mtime, which a hit refreshes, so it
// survives restarts and is shared by the replicas.
type dir struct {
	root     string
	maxBytes int64
	ttl      time.Duration
	log      *slog.Logger
	now      func() time.Time

	// bytes is the directory's size as of the last scan plus this
	// replica's writes since; crossing maxBytes wakes the pruning.
	bytes  atomic.Int64
	wake   chan struct{}
	pruned atomic.Uint64 // files removed, for the tests and the logs
}

func newDir(root string, maxBytes int64, ttl time.Duration, log *slog.Logger, now func() time.Time) *dir {
	return &dir{root: filepath.Clean(root), maxBytes: maxBytes, ttl: ttl, log: log, now: now,
		wake: make(chan struct{}, 1)}
}

func (d *dir) name(app string, k cache.Key) string { return objectName("", app, k) }

// path is where the object name (APPID/KEYHEX) lives.
func (d *dir) path(name string) (string, error) {
	app, h, ok := strings.Cut(name, "/")
	if !ok || !validApp(app) || len(h) < 2 || strings.ContainsAny(h, "/.") {
		return "", fmt.Errorf("store: %q is not an object name", name)
	}
	return filepath.Join(d.root, app, h[:2], h), nil
}

// inBackground runs f on a goroutine of its own and waits for it until ctx
// ends: a file system that hangs (a dead NFS mount) holds its goroutine,
// never the request.
func inBackground[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (d *dir) get(ctx context.Context, name string) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	return inBackground(ctx, func() ([]byte, error) {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errNotFound
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if info.Size() > maxObject || !info.Mode().IsRegular() {
			return nil, errTooLarge
		}
		// Sized by what is there, read to the end: a file another
		// process is still appending to (never one of ours) reads short
		// and fails to open.
		b := make([]byte, 0, info.Size()+1)
		b, err = readAll(f, b)
		if err != nil {
			return nil, err
		}
		if now := d.now(); now.Sub(info.ModTime()) > touchAfter {
			// Best effort: a read-only volume still serves.
			os.Chtimes(p, time.Time{}, now)
		}
		return b, nil
	})
}

// readAll reads r to its end into b, never past maxObject.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			if len(b) > maxObject {
				return nil, errTooLarge
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func (d *dir) put(ctx context.Context, name string, b []byte) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	_, err = inBackground(ctx, func() (struct{}, error) { return struct{}{}, d.writeFile(p, b) })
	if err != nil {
		return err
	}
	if d.bytes.Add(int64(len(b))) > d.maxBytes {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// writeFile writes b as p: a temporary file in p's directory, synced,
// renamed over p, and the directory synced so the rename survives a crash.
func (d *dir) writeFile(p string, b []byte) (err error) {
	folder := filepath.Dir(p)
	if err := os.MkdirAll(folder, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(folder, tempPrefix+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The LRU order is the store's clock's, the one hits touch with.
	if err := os.Chtimes(f.Name(), time.Time{}, d.now()); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return err
	}
	if df, err := os.Open(folder); err == nil {
		df.Sync()
		df.Close()
	}
	return nil
}

// check makes the root and writes and removes a file in it: a directory
// that cannot be written is refused, as a bucket that does not exist.
func (d *dir) check(ctx context.Context) error {
	_, err := inBackground(ctx, func() (struct{}, error) {
		if err := os.MkdirAll(d.root, 0o700); err != nil {
			return struct{}{}, fmt.Errorf("%w: %w", errRefused, err)
		}
		f, err := os.CreateTemp(d.root, tempPrefix+"check-*")
		if err != nil {
			return struct{}{}, fmt.Errorf("%w: the directory cannot be written: %w", errRefused, err)
		}
		f.Close()
		os.Remove(f.Name())
		return struct{}{}, nil
	})
	return err
}

func (d *dir) status(st *Status) {
	st.Bytes = max(d.bytes.Load(), 0)
	st.MaxBytes = d.maxBytes
}

func (d *dir) close() {}

// prune scans the directory at start, every pruneEvery, and whenever a
// write crossed the bound, until ctx ends.
func (d *dir) prune(ctx context.Context) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		d.pruneOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

type storedFile struct {
	path  string
	size  int64
	mtime time.Time
}

// pruneOnce removes the temporary files a crash left, the objects older
// than the TTL, and then, least recently used first, objects until the
// directory is within its bound.
func (d *dir) pruneOnce(ctx context.Context) {
	now := d.now()
	var files []storedFile
	var total int64
	removed := 0
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			// A file or directory removed meanwhile (by another replica's
			// pruning): skip it.
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if e.IsDir() || !e.Type().IsRegular() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		age := now.Sub(info.ModTime())
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if age > staleTemp && os.Remove(p) == nil {
				removed++
			}
			return nil
		}
		if d.ttl > 0 && age > d.ttl {
			// Neither written nor read for the TTL: expired whatever
			// its sealed age says.
			if os.Remove(p) == nil {
				removed++
			}
			return nil
		}
		files = append(files, storedFile{p, info.Size(), info.ModTime()})
		total += info.Size()
		return nil
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("durable store: cannot scan the directory", "dir", d.root, "error", err.Error())
	}
	if ctx.Err() != nil {
		return
	}
	if total > d.maxBytes {
		slices.SortFunc(files, func(a, b storedFile) int { return a.mtime.Compare(b.mtime) })
		target := int64(float64(d.maxBytes) * pruneTo)
		for _, f := range files {
			if total <= target {
				break
			}
			if err := os.Remove(f.path); err == nil || errors.Is(err, fs.ErrNotExist) {
				total -= f.size
				removed++
			}
		}
	}
	d.bytes.Store(total)
	if removed > 0 {
		d.pruned.Add(uint64(removed))
		d.log.Debug("durable store: pruned", "dir", d.root, "removed", removed, "bytes", total,
			"max_bytes", d.maxBytes)
	}
}
