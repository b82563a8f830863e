package fleet

import (
	"context"
	"encoding/json"
	mathrand "math/rand/v2"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

type answer int

const (
	gaveUp answer = iota
	imageAppeared
	holderFailed
	leaseReleased
)

// pollScript answers, at one instant, whether the image is there, the
// failure marker and the lease's holder.
var pollScript = redis.NewScript(`
return {redis.call('EXISTS', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
`)

// wait looks for holder's answer, with jittered pauses, until deadline.
// A failed look ends the wait: this request spends no more on Redis.
func (f *Flight) wait(ctx context.Context, keys flightKeys, holder string, deadline time.Time) (answer, error) {
	for {
		pause := f.poll + mathrand.N(f.poll*3/2+1)
		left := time.Until(deadline)
		if left <= 0 {
			return gaveUp, nil
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return gaveUp, nil
		case <-t.C:
		}
		var got []any
		err := f.c.Do(ctx, OpL2Get, func(ctx context.Context) error {
			var err error
			got, err = pollScript.Run(ctx, f.c.rdb, []string{keys.image, keys.failure, keys.lease}).Slice()
			return err
		})
		if err != nil || len(got) != 3 {
			return gaveUp, nil
		}
		if n, _ := got[0].(int64); n == 1 {
			return imageAppeared, nil
		}
		if marker, ok := got[1].(string); ok {
			if err := f.decodeFailure(keys, marker, holder); err != nil {
				return holderFailed, err
			}
		}
		if current, _ := got[2].(string); current != holder {
			return leaseReleased, nil
		}
	}
}

// failure is a holder's errcode as the waiters read it.
type failure struct {
	Owner  string `json:"owner"`
	Status int    `json:"status"`
	Code   int    `json:"errcode"`
	Msg    string `json:"errmsg"`
}

// maxFailureMsg bounds the errmsg a marker carries: WeChat's are a line.
const maxFailureMsg = 512

// encodeFailure seals the errcode we for the waiters of owner's lease, or
// returns nil when we is not an answer a waiter may take from another
// replica (see sharedFailure).
func (f *Flight) encodeFailure(keys flightKeys, owner string, we *wechat.Error) []byte {
	if !sharedFailure(we.Status, we.Code) {
		return nil
	}
	msg := we.Msg
	if len(msg) > maxFailureMsg {
		msg = strings.ToValidUTF8(msg[:maxFailureMsg], "")
	}
	b, _ := json.Marshal(failure{Owner: owner, Status: we.Status, Code: int(we.Code), Msg: msg})
	sealed, err := f.c.seal(keys.app, b, keys.failure)
	if err != nil {
		return nil
	}
	return sealed
}

// decodeFailure returns the errcode holder left, or nil for a marker of
// another holder's (an earlier flight's, still within its TTL), one that
// does not open, or one out of bounds.
func (f *Flight) decodeFailure(keys flightKeys, marker, holder string) error {
	plain, ok := f.c.open(UnsealedFailure, keys.app, []byte(marker), keys.failure)
	if !ok {
		return nil
	}
	var m failure
	if json.Unmarshal(plain, &m) != nil || !sharedFailure(m.Status, wechat.Errcode(m.Code)) || len(m.Msg) > maxFailureMsg {
		f.c.unsealed(UnsealedFailure)
		return nil
	}
	if m.Owner != holder {
		return nil
	}
	we := wechat.Errorf(wechat.Errcode(m.Code), m.Msg)
	we.Status = m.Status
	return we
}

// sharedFailure reports whether a failed fetch's answer may be handed to
// the waiters of another replica: an errcode wechat names (or -1) with a
// status the sidecar itself answers a failed fetch with. Anything else is
// not believed: a status out of HTTP's range would make the waiter's
// handler panic.
func sharedFailure(status int, code wechat.Errcode) bool {
	switch status {
	case 200, 502, 503, 504:
	default:
		return false
	}
	return code != wechat.OK && code.Named()
}
