// Package pregen is `wxa-sidecar pregen`: bulk pre-generation of code
// images through a running sidecar. It reads a CSV or JSON-lines file of
// code requests, validates every row as the sidecar would (wxacode) before
// the first call, sends the rest through the sidecar (so its cache, shared
// tier, limits and cool-downs apply), paces itself on WeChat's quota
// answers, and writes each image once, to a directory or a zip, with a
// manifest that lets a second run skip what is done.
//
// It talks to WeChat only through a sidecar's HTTP API: it never imports
// the sidecar's parts (proxy/, codes/, upstream/, token/, quota/, cache/,
// fleet/), so it never holds a token of its own competing with the
// fleet's.
package pregen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
	"github.com/wxa-sidecar/wxa-sidecar/wxacode"
)

// Exit statuses.
const (
	ExitOK          = 0   // every row has its image
	ExitFailed      = 1   // some rows failed or were not done
	ExitUsage       = 2   // bad flags, unreadable input, unknown column, no sidecar
	ExitInterrupted = 130 // SIGINT
)

// Options configures Run. Zero values get the documented defaults.
type Options struct {
	// Input is the file to read; "-" is Stdin.
	Input string
	// Stdin is read for Input "-"; nil is os.Stdin.
	Stdin io.Reader
	// Stdout gets the summary; Stderr the reports and the progress.
	Stdout, Stderr io.Writer
	// Endpoint is the WeChat path (wechat.PathUnlimited by default).
	Endpoint string
	// Format is "csv" or "jsonl"; "" decides by Input's extension (.jsonl),
	// CSV otherwise.
	Format string
	// Sidecar is the sidecar's base URL, /apps/{appid} included in
	// multi-app mode; default http://127.0.0.1:8080.
	Sidecar string
	// Out is the directory to write to; Zip the zip file. One of them,
	// unless DryRun.
	Out, Zip string
	// DryRun asks the sidecar, with only-if-cached, which codes it holds,
	// and says what generating the rest would spend.
	DryRun bool
	// Concurrency is how many requests are in flight at once; default 4.
	Concurrency int
	// Quiet prints only the summary.
	Quiet bool
	// Progress says how to show progress: progressAuto (a bar on a
	// terminal, else plain lines) unless set.
	Progress ProgressMode
	// ProgressEvery is the interval of the plain progress lines; default
	// 5s.
	ProgressEvery time.Duration
	// RequestTimeout bounds one request to the sidecar; default 90s, longer
	// than the sidecar's own worst case (a queue for a slot, two fetches).
	RequestTimeout time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

const (
	defaultSidecar     = "http://127.0.0.1:8080"
	defaultConcurrency = 4
)

// Endpoints by the short names --endpoint takes.
var endpointNames = map[string]string{
	"getwxacodeunlimit": wechat.PathUnlimited,
	"getwxacode":        wechat.PathWxacode,
	"createwxaqrcode":   wechat.PathQRCode,
}

// job is one input row and what became of it.
type job struct {
	Row
	requestSHA256 string // sha256 of the endpoint and the canonical request
	stem          string // the file's name without its extension
	target        string // scene or path: what the code stands for, for reports
	done          bool
	entry         entry
}

// summary counts a run's rows.
type summary struct {
	rows, invalid, kept, generated, failed, notDone int
}

// Run is the command; it returns the exit status. ctx ending (SIGINT) lets
// the requests in flight finish, writes the manifest and returns
// ExitInterrupted.
func Run(ctx context.Context, o Options) int {
	r, err := newRun(o)
	if err != nil {
		r.complain(err)
		return ExitUsage
	}
	return r.run(ctx)
}

// runner is one Run.
type runner struct {
	Options
	stdout, stderr io.Writer
	jobs           []*job
}

func newRun(o Options) (*runner, error) {
	r := &runner{Options: o, stdout: o.Stdout, stderr: o.Stderr}
	if r.stdout == nil {
		r.stdout = io.Discard
	}
	if r.stderr == nil {
		r.stderr = io.Discard
	}
	if r.Endpoint == "" {
		r.Endpoint = wechat.PathUnlimited
	}
	if r.Sidecar == "" {
		r.Sidecar = defaultSidecar
	}
	if r.Concurrency <= 0 {
		r.Concurrency = defaultConcurrency
	}
	if r.ProgressEvery <= 0 {
		r.ProgressEvery = 5 * time.Second
	}
	if r.RequestTimeout <= 0 {
		r.RequestTimeout = 90 * time.Second
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	switch {
	case r.Input == "":
		return r, &UsageError{Msg: "no input file (use - for standard input)"}
	case r.Out != "" && r.Zip != "":
		return r, &UsageError{Msg: "--out and --zip: choose one"}
	case r.Out == "" && r.Zip == "" && !r.DryRun:
		return r, &UsageError{Msg: "where to? --out DIR or --zip FILE"}
	}
	if u, err := url.Parse(r.Sidecar); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return r, &UsageError{Msg: fmt.Sprintf("--sidecar %q: want an http:// or https:// URL", redactURL(r.Sidecar))}
	}
	return r, nil
}

// complain prints err on standard error, with the command's one prefix:
// no error of this package carries one of its own.
func (r *runner) complain(err error) {
	fmt.Fprintln(r.stderr, "pregen:", err)
}

func (r *runner) run(ctx context.Context) int {
	rows, err := r.read()
	if err != nil {
		r.complain(err)
		return ExitUsage
	}
	r.prepare(rows)
	var sum summary
	sum.rows = len(r.jobs)
	for _, j := range r.jobs {
		if j.Err != nil {
			sum.invalid++
			if !r.Quiet {
				fmt.Fprintf(r.stderr, "pregen: line %d: invalid: errcode %d: %s\n", j.Line, j.Err.Code, j.Err.Msg)
			}
		}
	}
	var st store
	prior := map[int]entry{}
	if r.Out != "" || r.Zip != "" {
		if r.Out != "" {
			st, err = openDir(r.Out)
		} else {
			st, err = openZip(r.Zip)
		}
		if err == nil {
			prior, err = readManifest(st.manifestPath())
		}
		if err != nil {
			r.complain(err)
			return ExitUsage
		}
	}
	var carried []entry
	for _, j := range r.jobs {
		if j.Err != nil {
			continue
		}
		if e, ok := prior[j.Line]; ok && st != nil && r.stillHolds(st, j, e) {
			j.done, j.entry = true, e
			carried = append(carried, e)
			sum.kept++
		}
	}
	if r.DryRun {
		return r.dryRun(ctx, sum)
	}
	m, err := createManifest(st.manifestPath(), carried)
	if err != nil {
		r.complain(err)
		return ExitUsage
	}
	for _, j := range r.jobs {
		if j.Err != nil {
			j.entry = entry{line: j.Line, result: errResult(j.Err), requestSHA256: j.requestSHA256}
			m.add(j.entry)
		}
	}
	return r.generate(ctx, st, m, sum)
}

// read reads the input rows.
func (r *runner) read() ([]Row, error) {
	var in io.Reader
	if r.Input == "-" {
		in = r.Stdin
		if in == nil {
			in = os.Stdin
		}
	} else {
		f, err := os.Open(r.Input)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	format := r.Format
	if format == "" {
		format = "csv"
		if strings.EqualFold(filepath.Ext(r.Input), ".jsonl") {
			format = "jsonl"
		}
	}
	switch format {
	case "csv":
		return ReadCSV(in, r.Endpoint)
	case "jsonl":
		return ReadJSONL(in)
	}
	return nil, &UsageError{Msg: fmt.Sprintf("--format %q: want csv or jsonl", format)}
}

// prepare validates every row with the sidecar's own rules and names the
// files, before anything is sent: a bad row is known, with its line, before
// any quota is spent.
func (r *runner) prepare(rows []Row) {
	names := newStems()
	for _, row := range rows {
		j := &job{Row: row}
		r.jobs = append(r.jobs, j)
		if j.Err != nil {
			continue
		}
		canonical, err := wxacode.Canonical(r.Endpoint, j.Body)
		if err != nil {
			var we *wechat.Error
			if !errors.As(err, &we) {
				we = wechat.Errorf(wechat.DataFormat, err.Error())
			}
			j.Err = we
			continue
		}
		h := sha256.New()
		h.Write([]byte(r.Endpoint))
		h.Write([]byte{0})
		h.Write(canonical)
		j.requestSHA256 = hex.EncodeToString(h.Sum(nil))
		var fields struct {
			Scene string `json:"scene"`
			Path  string `json:"path"`
		}
		json.Unmarshal(canonical, &fields)
		j.target = fields.Scene + fields.Path // one of them is empty
		name := j.Name
		if name == "" {
			name = j.target
		}
		j.stem = names.assign(name)
	}
}

// stillHolds reports whether the entry a run before wrote for j's line is
// j's image, still on disk (or in the zip) as it was written.
func (r *runner) stillHolds(st store, j *job, e entry) bool {
	return e.result == resultOK && e.requestSHA256 == j.requestSHA256 &&
		(e.file == j.stem+".jpg" || e.file == j.stem+".png") && st.has(e.file, e.sha256)
}

// errResult is an error as the manifest's result column says it.
func errResult(e *wechat.Error) string {
	return fmt.Sprintf("errcode %d: %s", e.Code, e.Msg)
}

// todo are the rows that need a request.
func (r *runner) todo() []*job {
	var out []*job
	for _, j := range r.jobs {
		if j.Err == nil && !j.done {
			out = append(out, j)
		}
	}
	return out
}

// parallel calls f(0..n-1) on Concurrency goroutines, starting no new call
// once ctx is done.
func (r *runner) parallel(ctx context.Context, n int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(r.Concurrency, max(n, 1)) {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
}

// listFailures prints the failed rows (at most maxListed) after a summary.
func (r *runner) listFailures(manifestPath *string) {
	const maxListed = 20
	listed, more := 0, 0
	for _, j := range r.jobs {
		if j.Err == nil && (j.entry.result == "" || j.entry.result == resultOK || j.entry.result == resultNotDone) {
			continue
		}
		if listed == maxListed {
			more++
			continue
		}
		listed++
		if j.Err != nil {
			fmt.Fprintf(r.stdout, "pregen: line %d: invalid: errcode %d: %s\n", j.Line, j.Err.Code, j.Err.Msg)
		} else {
			fmt.Fprintf(r.stdout, "pregen: line %d: failed: %s\n", j.Line, j.entry.result)
		}
	}
	if more > 0 {
		where := "the manifest"
		if manifestPath != nil {
			where = *manifestPath
		}
		fmt.Fprintf(r.stdout, "pregen: ... and %d more failed rows: see %s\n", more, where)
	}
}
