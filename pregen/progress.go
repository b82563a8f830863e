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

// progressModes are the values of --progress.
var progressModes = map[string]ProgressMode{"auto": ProgressAuto, "bar": ProgressBar, "lines": ProgressLines,
	"none": ProgressNone}

// progress reports rows as they finish. Its words are the summary's:
// invalid rows (refused before any request) and failed requests.
type progress interface {
	// done counts one finished row, failed or not.
	done(failed bool)
	// stop ends the display.
	stop()
}

// newProgress shows total rows to request; invalid rows were refused
// before, failed rows have failed already.
func (r *runner) newProgress(total, invalid, failed int) progress {
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
	c := counts{total: total, invalid: invalid, fails: failed, meter: newRateMeter(r.Now())}
	switch mode {
	case ProgressBar:
		return newBar(r.stderr, c, r.Now)
	case ProgressLines:
		return newLines(r.stderr, c, r.ProgressEvery, r.Now)
	}
	return noProgress{}
}

type noProgress struct{}

func (noProgress) done(bool) {}
func (noProgress) stop()     {}

// counts are what both displays show.
type counts struct {
	total, count, invalid, fails int
	meter                        *rateMeter
}

func (c *counts) done(failed bool, now time.Time) {
	c.count++
	if failed {
		c.fails++
	}
	c.meter.add(now, c.count)
}

// outcome is the rows' part of a line: "2 invalid, 0 failed".
func (c *counts) outcome() string {
	return fmt.Sprintf("%d invalid, %d failed", c.invalid, c.fails)
}

// pace is the rate and the time left, or "" until a rate can be told.
func (c *counts) pace(now time.Time) string {
	rate, ok := c.meter.rate(now)
	if !ok {
		return ""
	}
	eta := "unknown"
	if rate > 0 {
		eta = (time.Duration(float64(c.total-c.count)/rate*float64(time.Second)) + time.Second - 1).Truncate(time.Second).String()
	}
	return fmt.Sprintf("%.1f codes/s, ETA %s", rate, eta)
}

// Rate shown.
const (
	// rateWindow is how far back the rate looks: long enough to smooth
	// the bursts of a limiter, short enough to follow a pause for 45011.
	rateWindow = 10 * time.Second
	// minRateSpan is how long a run must have gone before any rate is
	// shown: a first code (a cache hit) finishing microseconds after the
	// start says nothing of the pace, and the bar once showed 282406
	// codes/s for it.
	minRateSpan = time.Second
	// rateStep is the spacing of the samples kept.
	rateStep = 250 * time.Millisecond
)

// rateMeter is a moving average of rows per second over the last
// rateWindow, from samples of the running count.
type rateMeter struct {
	start   time.Time
	samples []rateSample // oldest first; the first is at or before now-rateWindow once the run is older
}

type rateSample struct {
	at    time.Time
	count int
}

func newRateMeter(start time.Time) *rateMeter {
	return &rateMeter{start: start, samples: []rateSample{{at: start}}}
}

// add records count, the rows finished, at now.
func (m *rateMeter) add(now time.Time, count int) {
	if last := &m.samples[len(m.samples)-1]; len(m.samples) > 1 && now.Sub(m.samples[len(m.samples)-2].at) < rateStep {
		// Any point of the count's curve will do: keep one per step.
		*last = rateSample{at: now, count: count}
	} else {
		m.samples = append(m.samples, rateSample{at: now, count: count})
	}
	// Keep one sample at or before the window's start, as the base.
	cut := 0
	for cut+1 < len(m.samples) && !m.samples[cut+1].at.After(now.Add(-rateWindow)) {
		cut++
	}
	m.samples = m.samples[cut:]
}

// rate is rows per second over the last rateWindow (the whole run while it
// is shorter), and false until the run is minRateSpan old.
func (m *rateMeter) rate(now time.Time) (float64, bool) {
	if now.Sub(m.start) < minRateSpan {
		return 0, false
	}
	base, last := m.samples[0], m.samples[len(m.samples)-1]
	for _, s := range m.samples[1:] {
		// The latest sample no later than the window's start.
		if s.at.After(now.Add(-rateWindow)) {
			break
		}
		base = s
	}
	span := now.Sub(base.at)
	if span < minRateSpan {
		return 0, false
	}
	return float64(last.count-base.count) / span.Seconds(), true
}

// bar is schollz/progressbar: done/total, with the invalid and failed
// rows, the rate and the time left (ours: the library's own rate starts
// with the first row's spike) in its description.
type bar struct {
	w      io.Writer
	now    func() time.Time
	ticker *time.Ticker
	quit   chan struct{}
	wg     sync.WaitGroup

	mu sync.Mutex
	b  *progressbar.ProgressBar
	c  counts
}

func newBar(w io.Writer, c counts, now func() time.Time) *bar {
	b := &bar{w: w, c: c, now: now, ticker: time.NewTicker(time.Second), quit: make(chan struct{})}
	b.b = progressbar.NewOptions(max(c.total, 1),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(b.description()),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false), // its own rate: the spike

		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	// The rate moves while no row finishes (a pause for 45011): redraw.
	b.wg.Go(func() {
		for {
			select {
			case <-b.ticker.C:
				b.mu.Lock()
				if !b.b.IsFinished() {
					b.b.Describe(b.description())
				}
				b.mu.Unlock()
			case <-b.quit:
				return
			}
		}
	})
	return b
}

func (b *bar) description() string {
	d := b.c.outcome()
	if pace := b.c.pace(b.now()); pace != "" {
		d += ", " + pace
	}
	return d
}

func (b *bar) done(failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.c.done(failed, b.now())
	b.b.Describe(b.description())
	b.b.Add(1)
}

func (b *bar) stop() {
	b.ticker.Stop()
	close(b.quit)
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.b.IsFinished() {
		b.b.Exit() // ends the line (OnCompletion)
	}
}

// lines prints one plain line every few seconds.
type lines struct {
	w      io.Writer
	now    func() time.Time
	ticker *time.Ticker
	quit   chan struct{}
	wg     sync.WaitGroup

	mu sync.Mutex
	c  counts
}

func newLines(w io.Writer, c counts, every time.Duration, now func() time.Time) *lines {
	l := &lines{w: w, c: c, now: now, ticker: time.NewTicker(every), quit: make(chan struct{})}
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
	l.c.done(failed, l.now())
}

func (l *lines) print() {
	l.mu.Lock()
	line := fmt.Sprintf("pregen: %d/%d done, %s", l.c.count, l.c.total, l.c.outcome())
	if pace := l.c.pace(l.now()); pace != "" {
		line += ", " + pace
	}
	l.mu.Unlock()
	fmt.Fprintln(l.w, line)
}

func (l *lines) stop() {
	l.ticker.Stop()
	close(l.quit)
	l.wg.Wait()
}
