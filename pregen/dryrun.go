package pregen

import (
	"context"
	"fmt"
	"sync"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// checkSidecar asks the sidecar for j with only-if-cached: never a call to
// WeChat, so a run that finds nothing to do, or no sidecar, spends nothing.
// It returns the answer (an image, or "not cached"), or why the sidecar
// cannot be used.
func (r *runner) checkSidecar(ctx context.Context, c *client, j *job) (answer, error) {
	a, err := c.ask(ctx, j.Body, true)
	switch {
	case err != nil:
		return a, fmt.Errorf("%w: %w", errUnreachable, err)
	case a.image != nil || a.notCached() || a.broken:
		// A broken image is a sidecar answering: the row fails, not the run.
		return a, nil
	}
	return a, fmt.Errorf("%w: %s answered HTTP %d errcode %d: %s", errUnreachable, c.shown, a.status, a.err.Code, a.err.Msg)
}

// dryRun asks the sidecar which codes it holds and says what the rest
// would spend.
func (r *runner) dryRun(ctx context.Context, sum summary) int {
	todo := r.todo()
	c := newClient(r.Sidecar, r.Endpoint, r.Concurrency, r.RequestTimeout)
	cached := make([]bool, len(todo))
	var firstErr error
	if len(todo) > 0 {
		a, err := r.checkSidecar(ctx, c, todo[0])
		if err != nil {
			r.complain(err)
			return ExitUsage
		}
		cached[0] = a.image != nil
		var mu sync.Mutex
		r.parallel(ctx, len(todo)-1, func(i int) {
			a, err := c.ask(context.WithoutCancel(ctx), todo[i+1].Body, true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			cached[i+1] = err == nil && a.image != nil
		})
	}
	if firstErr != nil {
		r.complain(fmt.Errorf("dry run: the sidecar failed to answer: %w", firstErr))
		return ExitUsage
	}
	if ctx.Err() != nil {
		fmt.Fprintln(r.stderr, "pregen: dry run interrupted")
		return ExitInterrupted
	}
	inCache := 0
	distinct := map[string]bool{}
	for i, j := range todo {
		if cached[i] {
			inCache++
		} else {
			distinct[j.requestSHA256] = true
		}
	}
	fmt.Fprintf(r.stdout, "pregen: dry run: %d rows: %d invalid, %d already written, %d cached by the sidecar, %d to generate\n",
		sum.rows, sum.invalid, sum.kept, inCache, len(todo)-inCache)
	fmt.Fprintln(r.stdout, "pregen: would spend", quotaSpent(r.Endpoint, len(distinct)))
	if len(distinct) > 0 {
		lim, err := c.limitsFor(ctx, r.Endpoint)
		fmt.Fprintln(r.stdout, "pregen:", estimate(len(distinct), r.Endpoint, lim, err))
	}
	r.listFailures(nil)
	if sum.invalid > 0 {
		return ExitFailed
	}
	return ExitOK
}

// quotaSpent says what n calls to endpoint spend of WeChat's quotas
// (see WECHAT-API.md).
func quotaSpent(endpoint string, n int) string {
	const lifetime = "of the 100000 codes getwxacode and createwxaqrcode may make in the app's lifetime"
	switch endpoint {
	case wechat.PathUnlimited:
		return fmt.Sprintf("%d calls of getwxacodeunlimit (no cap on the count; WeChat allows %d a minute)", n, wechatPerMinute)
	case wechat.PathWxacode:
		return fmt.Sprintf("%d of getwxacode's 10000 codes a day, and %d %s", n, n, lifetime)
	}
	return fmt.Sprintf("%d %s", n, lifetime)
}
