package pregen

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Manifest results besides the errors.
const (
	resultOK      = "ok"
	resultNotDone = "not done"
)

// manifestHeader names manifest.csv's columns. request_sha256 is the
// sha256 of the endpoint and the canonical request (wxacode.Canonical): a
// row edited in place (another width, say) no longer matches its old file,
// and is generated again. It is not the sidecar's cache key, which also
// hashes the app; manifests written before it was named so call it
// request, and still resume.
var manifestHeader = []string{"line", "file", "sha256", "bytes", "result", "request_sha256"}

// oldRequestColumn is request_sha256's name in manifests written before.
const oldRequestColumn = "request"

// entry is one row of manifest.csv.
type entry struct {
	line          int
	file          string
	sha256        string
	bytes         int
	result        string
	requestSHA256 string
}

func (e entry) record() []string {
	size := ""
	if e.result == resultOK {
		size = strconv.Itoa(e.bytes)
	}
	return []string{strconv.Itoa(e.line), e.file, e.sha256, size, e.result, e.requestSHA256}
}

// readManifest reads a manifest written before, by line (the last entry of
// a line wins), its columns found by the header's names (request or
// request_sha256). A missing file is an empty manifest; a line that does
// not parse (the torn last line of a killed run) is ignored: its row is
// simply generated again. A file without a header this version can read
// is an empty manifest too: every row is generated again, nothing is lost
// but the time.
func readManifest(path string) (map[int]entry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[int]entry{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	out := map[int]entry{}
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return out, nil
	}
	col := map[string]int{}
	for i, name := range header {
		if name == oldRequestColumn {
			name = manifestHeader[5]
		}
		col[name] = i
	}
	for _, name := range manifestHeader {
		if _, ok := col[name]; !ok {
			return out, nil
		}
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil || len(rec) != len(header) {
			continue
		}
		field := func(i int) string { return rec[col[manifestHeader[i]]] }
		line, err1 := strconv.Atoi(field(0))
		size, err2 := strconv.Atoi(field(3))
		if err1 != nil || err2 != nil {
			continue
		}
		out[line] = entry{line: line, file: field(1), sha256: field(2), bytes: size, result: field(4),
			requestSHA256: field(5)}
	}
}

// manifest is manifest.csv being written: every entry appended and flushed
// as its row finishes, so a killed run leaves what it did on disk.
type manifest struct {
	path string

	mu      sync.Mutex
	f       *os.File
	w       *csv.Writer
	entries []entry
}

// createManifest starts path over with carried, the entries of a run
// before that still hold: written to a temporary file and renamed, so the
// old manifest is never lost half-way.
func createManifest(path string, carried []entry) (*manifest, error) {
	m := &manifest{path: path, entries: slices.Clone(carried)}
	if err := m.rewrite(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m.f, m.w = f, csv.NewWriter(f)
	return m, nil
}

// rewrite replaces the file with the entries so far, in line order.
func (m *manifest) rewrite() error {
	tmp, err := os.CreateTemp(filepath.Dir(m.path), ".manifest-*.tmp")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(m.bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("manifest: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := os.Rename(tmp.Name(), m.path); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// bytes is the manifest as CSV, sorted by line.
func (m *manifest) bytes() []byte {
	sorted := slices.Clone(m.entries)
	slices.SortStableFunc(sorted, func(a, b entry) int { return a.line - b.line })
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(manifestHeader)
	for _, e := range sorted {
		w.Write(e.record())
	}
	w.Flush()
	return buf.Bytes()
}

// add appends e and flushes it to the file.
func (m *manifest) add(e entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries = append(m.entries, e)
	m.w.Write(e.record())
	m.w.Flush()
	if err := m.w.Error(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// close sorts the file by line, now that the run is over.
func (m *manifest) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.f.Close()
	return m.rewrite()
}

// store is where the images go: a directory, or a zip.
type store interface {
	// has reports whether file holds an image of this sha256 (hex).
	has(file, sum string) bool
	// put writes img as file, whole or not at all.
	put(file string, img []byte) error
	// manifestPath is where manifest.csv is kept.
	manifestPath() string
	// finish completes the output once the run is over (the zip).
	finish(m *manifest) error
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// tempPrefix marks the temporary files an image is written to before it
// is renamed; a killed run may leave some, which the next one removes.
const tempPrefix = ".pregen-"

// dirStore writes each image as a file in dir.
type dirStore struct{ dir string }

func openDir(dir string) (*dirStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	stale, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return &dirStore{dir: dir}, nil
}

func (d *dirStore) has(file, sum string) bool {
	b, err := os.ReadFile(filepath.Join(d.dir, file))
	return err == nil && sha256Hex(b) == sum
}

func (d *dirStore) put(file string, img []byte) error {
	tmp, err := os.CreateTemp(d.dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_, err = tmp.Write(img)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(d.dir, file))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

func (d *dirStore) manifestPath() string { return filepath.Join(d.dir, "manifest.csv") }

func (d *dirStore) finish(*manifest) error { return nil }

// zipStore writes a zip: images go to FILE.parts/ as they come (so a
// killed run keeps them), and the zip is built from there, and from the
// zip of a run before, when the run is over, with manifest.csv inside.
// The manifest is also kept beside it as FILE.manifest.csv, appended row by
// row like a directory's.
type zipStore struct {
	path  string
	parts *dirStore
	old   *zip.ReadCloser // the zip of a run before; nil if none
	files map[string]*zip.File

	mu   sync.Mutex
	puts int
}

func openZip(path string) (*zipStore, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("--zip: %w", err)
		}
	}
	z := &zipStore{path: path, files: map[string]*zip.File{}}
	if old, err := zip.OpenReader(path); err == nil {
		z.old = old
		for _, f := range old.File {
			z.files[f.Name] = f
		}
	}
	partsDir := path + ".parts"
	if _, err := os.Stat(partsDir); err == nil {
		p, err := openDir(partsDir)
		if err != nil {
			return nil, err
		}
		z.parts = p
	}
	return z, nil
}

func (z *zipStore) has(file, sum string) bool {
	if z.parts != nil && z.parts.has(file, sum) {
		return true
	}
	f := z.files[file]
	if f == nil {
		return false
	}
	r, err := f.Open()
	if err != nil {
		return false
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == sum
}

func (z *zipStore) put(file string, img []byte) error {
	z.mu.Lock()
	if z.parts == nil {
		p, err := openDir(z.path + ".parts")
		if err != nil {
			z.mu.Unlock()
			return err
		}
		z.parts = p
	}
	z.puts++
	parts := z.parts
	z.mu.Unlock()
	return parts.put(file, img)
}

func (z *zipStore) manifestPath() string { return z.path + ".manifest.csv" }

// finish builds the zip from the images of this run and of the zip
// before, unless nothing changed since that one was written.
func (z *zipStore) finish(m *manifest) error {
	if z.old != nil {
		defer z.old.Close()
	}
	manifestBytes := m.bytes()
	if z.puts == 0 && z.old != nil && z.parts == nil {
		if f := z.files["manifest.csv"]; f != nil {
			if r, err := f.Open(); err == nil {
				old, _ := io.ReadAll(r)
				r.Close()
				if bytes.Equal(old, manifestBytes) {
					return nil // the zip before holds exactly this run's result
				}
			}
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(z.path), tempPrefix+"*.zip")
	if err != nil {
		return fmt.Errorf("zip: %w", err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	w := zip.NewWriter(bw)
	for _, e := range m.entries {
		if e.result != resultOK {
			continue
		}
		if err := z.addImage(w, e.file); err != nil {
			tmp.Close()
			return err
		}
	}
	mw, err := w.CreateHeader(&zip.FileHeader{Name: "manifest.csv", Method: zip.Deflate, Modified: time.Now()})
	if err == nil {
		_, err = mw.Write(manifestBytes)
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), z.path)
	}
	if err != nil {
		return fmt.Errorf("zip: %w", err)
	}
	if z.parts != nil {
		os.RemoveAll(z.parts.dir)
	}
	return nil
}

// addImage copies file into w from this run's parts, or from the zip
// before as it is stored there.
func (z *zipStore) addImage(w *zip.Writer, file string) error {
	if z.parts != nil {
		if b, err := os.ReadFile(filepath.Join(z.parts.dir, file)); err == nil {
			// Stored, not deflated: JPEG and PNG are compressed already.
			fw, err := w.CreateHeader(&zip.FileHeader{Name: file, Method: zip.Store, Modified: time.Now()})
			if err == nil {
				_, err = fw.Write(b)
			}
			if err != nil {
				return fmt.Errorf("zip: %w", err)
			}
			return nil
		}
	}
	if f := z.files[file]; f != nil {
		if err := w.Copy(f); err != nil {
			return fmt.Errorf("zip: %w", err)
		}
		return nil
	}
	return fmt.Errorf("zip: %s is in the manifest but in neither %s nor the zip before", file,
		strings.TrimSuffix(z.path, "/")+".parts")
}
