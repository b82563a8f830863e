package pregen

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// ProgressMode says how progress is shown on standard error.
type ProgressMode uint8

const (
	// ProgressAuto is a bar when standard error is a terminal, plain lines
	// otherwise (CI logs stay readable).
	ProgressAuto ProgressMode = iota
	ProgressBar
	ProgressLines
	ProgressNone
)

// progress reports rows as they finish.
type progress interface {
	// done counts one finished row, failed or not.
	done(failed bool)
	// stop ends the display.
	stop()
}

func (r *runner) newProgress(total, failedBefore int) progress {
	mode := r.Progress
	if r.Quiet {
		mode = ProgressNone
	}
	if mode == ProgressAuto {
		mode = ProgressLines
		if f, ok := r.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			mode = ProgressBar
		}
	}
	switch mode {
	case ProgressBar:
		return newBar(r.stderr, total, failedBefore)
	case ProgressLines:
		return newLines(r.stderr, total, failedBefore, r.ProgressEvery, r.Now)
	}
	return noProgress{}
}

type noProgress struct{}

func (noProgress) done(bool) {}
func (noProgress) stop()     {}

// bar is schollz/progressbar: done/total, codes per second, ETA, and the
// failures so far in its description.
type bar struct {
	w      io.Writer
	mu     sync.Mutex
	b      *progressbar.ProgressBar
	failed int
}

func newBar(w io.Writer, total, failedBefore int) *bar {
	b := &bar{w: w, failed: failedBefore}
	b.b = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(b.description()),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("codes"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	return b
}

func (b *bar) description() string { return fmt.Sprintf("%d failed", b.failed) }

func (b *bar) done(failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if failed {
		b.failed++
		b.b.Describe(b.description())
	}
	b.b.Add(1)
}

func (b *bar) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.b.IsFinished() {
		b.b.Exit()
		fmt.Fprintln(b.w)
	}
}

// lines prints one plain line every few seconds.
type lines struct {
	w      io.Writer
	total  int
	now    func() time.Time
	start  time.Time
	ticker *time.Ticker
	quit   chan struct{}
	wg     sync.WaitGroup

	mu           sync.Mutex
	count, fails int
}

func newLines(w io.Writer, total, failedBefore int, every time.Duration, now func() time.Time) *lines {
	l := &lines{w: w, total: total, now: now, start: now(), ticker: time.NewTicker(every), quit: make(chan struct{}),
		fails: failedBefore}
	l.wg.Go(func() {
		for {
			select {
			case <-l.ticker.C:
				l.print()
			case <-l.quit:
				return
			}
		}
	})
	return l
}

func (l *lines) done(failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if failed {
		l.fails++
	}
}

func (l *lines) print() {
	l.mu.Lock()
	count, fails := l.count, l.fails
	l.mu.Unlock()
	elapsed := l.now().Sub(l.start)
	rate := float64(count) / elapsed.Seconds()
	eta := "unknown"
	if rate > 0 {
		eta = time.Duration(float64(l.total-count) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(l.w, "pregen: %d/%d done, %d failed, %.1f codes/s, ETA %s\n", count, l.total, fails, rate, eta)
}

func (l *lines) stop() {
	l.ticker.Stop()
	close(l.quit)
	l.wg.Wait()
}
