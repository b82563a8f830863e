package pregen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Pacing.
const (
	// transportAttempts is how many times a row is sent to a sidecar that
	// does not answer before the run stops: a restarting sidecar is back
	// within them, a gone one is not.
	transportAttempts = 3
	// minuteMargin is added to "the next minute" when WeChat's 45011 says
	// no more: the sidecar's cool-down ends on the minute, and a request a
	// hair early would only be refused again.
	minuteMargin = 200 * time.Millisecond
)

// pacer holds every request back while WeChat's quota says wait: one
// pause for the whole run, since the quota is the app's, not a row's.
type pacer struct {
	now func() time.Time

	mu       sync.Mutex
	resumeAt time.Time
	// dailyPauseEnd is the end of the one-minute pause the first 45009 on
	// getwxacodeunlimit started; zero before any.
	dailyPauseEnd time.Time
}

// wait returns true once requests may go, false if stop closes first.
func (p *pacer) wait(stop <-chan struct{}) bool {
	for {
		p.mu.Lock()
		d := p.resumeAt.Sub(p.now())
		p.mu.Unlock()
		if d <= 0 {
			select {
			case <-stop:
				return false
			default:
				return true
			}
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return false
		}
	}
}

func (p *pacer) pauseUntil(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.After(p.resumeAt) {
		p.resumeAt = t
	}
}

// minuteQuota paces a 45011 answered at now: until its Retry-After (the
// sidecar's own refusal says when), else to the next minute, when
// WeChat's window resets.
func (p *pacer) minuteQuota(retryAfter time.Duration, now time.Time) {
	until := now.Truncate(time.Minute).Add(time.Minute + minuteMargin)
	if retryAfter > 0 {
		until = now.Add(retryAfter)
	}
	p.pauseUntil(until)
}

// dailyQuota decides on a 45009 from getwxacodeunlimit to a request sent
// at sentAt, answered at now: older docs used 45009 for its per-minute
// limit, so the first one pauses the run for a minute; one to a request
// sent after that pause is the day's quota, and stops the run (false).
func (p *pacer) dailyQuota(sentAt, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dailyPauseEnd.IsZero() {
		p.dailyPauseEnd = now.Add(time.Minute)
		if p.dailyPauseEnd.After(p.resumeAt) {
			p.resumeAt = p.dailyPauseEnd
		}
		return true
	}
	// Sent before the pause ended: the same refusal as the first, met by a
	// request already in flight.
	return sentAt.Before(p.dailyPauseEnd)
}

// stopsTheRun are the errcodes no other row can escape: the app's token
// cannot be had, or the app may not make codes at all.
func stopsTheRun(code wechat.Errcode) bool {
	switch code {
	case wechat.BadGrantType, wechat.InvalidAppID, wechat.InvalidSecret, wechat.IPNotWhitelisted, wechat.IPNotRegistered,
		wechat.SecretFrozen, wechat.MissingSecret, wechat.MissingToken, wechat.Unauthorized, wechat.NoPermission:
		return true
	}
	return code.IsTokenError()
}

// generation is the requests of one run.
type generation struct {
	*runner
	c     *client
	st    store
	m     *manifest
	pace  *pacer
	prog  progress
	ctx   context.Context // requests: not cancelled by SIGINT, so rows in flight finish
	sum   *summary
	mu    sync.Mutex
	stopC chan struct{}
	// why is the reason the run stopped early; "" while it has not.
	why         string
	interrupted bool
}

func (g *generation) stop(why string, interrupted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.why != "" {
		return
	}
	g.why, g.interrupted = why, interrupted
	close(g.stopC)
}

func (r *runner) generate(ctx context.Context, st store, m *manifest, sum summary) int {
	todo := r.todo()
	g := &generation{runner: r, st: st, m: m, sum: &sum, stopC: make(chan struct{}),
		c:    newClient(r.Sidecar, r.Endpoint, r.Concurrency, r.RequestTimeout),
		pace: &pacer{now: r.Now}, ctx: context.WithoutCancel(ctx)}
	stopOnInterrupt := context.AfterFunc(ctx, func() { g.stop("interrupted", true) })
	defer stopOnInterrupt()
	if len(todo) > 0 {
		// Checked with the first row that needs a request, and only then:
		// a run with nothing to do sends nothing at all.
		a, err := r.checkSidecar(g.ctx, g.c, todo[0])
		if err != nil {
			r.complain(err)
			m.close()
			return ExitUsage
		}
		switch {
		case a.image != nil:
			g.save(todo[0], a)
			todo = todo[1:]
		case a.broken:
			g.fail(todo[0], a.err)
			todo = todo[1:]
		}
	}
	g.prog = r.newProgress(len(todo), sum.invalid, sum.failed)
	r.parallel(ctx, len(todo), func(i int) {
		select {
		case <-g.stopC:
			return
		default:
		}
		g.do(todo[i])
	})
	g.prog.stop()
	for _, j := range r.jobs {
		if j.Err == nil && j.entry.result == "" {
			j.entry = entry{line: j.Line, file: "", result: resultNotDone, requestSHA256: j.requestSHA256}
			m.add(j.entry)
			sum.notDone++
		}
	}
	status := ExitOK
	if err := m.close(); err != nil {
		r.complain(err)
		status = ExitFailed
	}
	if err := st.finish(m); err != nil {
		r.complain(err)
		status = ExitFailed
	}
	r.report(sum, g.why, st.manifestPath())
	switch {
	case g.interrupted:
		return ExitInterrupted
	case status != ExitOK || sum.invalid+sum.failed+sum.notDone > 0:
		return ExitFailed
	}
	return ExitOK
}

// do generates j's image, pacing on WeChat's quota answers.
func (g *generation) do(j *job) {
	for attempt := 1; ; {
		if !g.pace.wait(g.stopC) {
			return // not done: the run stopped
		}
		sentAt := g.Now()
		a, err := g.c.ask(g.ctx, j.Body, false)
		if err != nil {
			if attempt == transportAttempts {
				g.stop(fmt.Sprintf("the sidecar stopped answering: %v", err), false)
				return
			}
			g.pace.pauseUntil(g.Now().Add(time.Duration(attempt) * time.Second))
			attempt++
			continue
		}
		if a.image != nil {
			g.save(j, a)
			return
		}
		now, e := g.Now(), a.err
		switch {
		case e.Code == wechat.MinuteQuota:
			// Never fails a row: the minute passes.
			g.pace.minuteQuota(e.RetryAfter, now)
		case e.Code == wechat.DailyQuota && g.Endpoint == wechat.PathUnlimited && g.pace.dailyQuota(sentAt, now):
		case e.Code == wechat.DailyQuota:
			g.stop(fmt.Sprintf("WeChat's daily quota is reached (errcode 45009: %s)", e.Msg), false)
			return
		case stopsTheRun(e.Code):
			g.stop(fmt.Sprintf("no code can be made now (errcode %d: %s)", e.Code, e.Msg), false)
			return
		default:
			// 45029 among them: WeChat refuses these parameters for
			// good, not the endpoint. A broken image too: the sidecar
			// would answer the same bytes again.
			g.fail(j, e)
			return
		}
	}
}

// save writes j's image and records it.
func (g *generation) save(j *job, a answer) {
	file := j.stem + a.ext
	if err := g.st.put(file, a.image); err != nil {
		g.stop(err.Error(), false)
		return
	}
	g.finish(j, entry{line: j.Line, file: file, sha256: sha256Hex(a.image), bytes: len(a.image), result: resultOK,
		requestSHA256: j.requestSHA256}, false)
}

// fail records j as failed with e.
func (g *generation) fail(j *job, e *wechat.Error) {
	g.finish(j, entry{line: j.Line, result: errResult(e), requestSHA256: j.requestSHA256}, true)
}

func (g *generation) finish(j *job, e entry, failed bool) {
	if err := g.m.add(e); err != nil {
		g.stop(err.Error(), false)
	}
	g.mu.Lock()
	j.entry = e
	if failed {
		g.sum.failed++
	} else {
		g.sum.generated++
	}
	g.mu.Unlock()
	if g.prog != nil {
		g.prog.done(failed)
	}
}

// report prints the summary.
func (r *runner) report(sum summary, why, manifestPath string) {
	fmt.Fprintf(r.stdout, "pregen: %d rows: %d with their image (%d written now, %d already there), %d invalid, %d failed, %d not done\n",
		sum.rows, sum.generated+sum.kept, sum.generated, sum.kept, sum.invalid, sum.failed, sum.notDone)
	r.listFailures(&manifestPath)
	if why != "" {
		fmt.Fprintf(r.stdout, "pregen: stopped: %s; %d rows not done: run the same command again to finish them\n", why, sum.notDone)
	}
	out := r.Out
	if r.Zip != "" {
		out = r.Zip
	}
	fmt.Fprintf(r.stdout, "pregen: images in %s, manifest %s\n", out, manifestPath)
}
