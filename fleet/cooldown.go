package fleet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/quota"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// cooldownSlack allows for the clocks of the replica that wrote a
// cool-down, of Redis and of the one reading it.
const cooldownSlack = time.Minute

// maxStrikes bounds a cool-down's strikes: the second 45009 in a row
// already closes the endpoint for the day.
const maxStrikes = 100

// cooldownBound is the latest end a cool-down observed at now may have:
// the next midnight UTC+8 (or QUOTA_COOLDOWN from now), or the next
// minute, whichever is later, plus the clocks' slack.
func (g *Gate) cooldownBound(now time.Time) time.Time {
	day, _ := quota.NextCooldown(wechat.DailyQuota, "", nil, now, g.opts.DailyCooldown)
	minute, _ := quota.NextCooldown(wechat.MinuteQuota, "", nil, now, g.opts.DailyCooldown)
	end := day.Until
	if minute.Until.After(end) {
		end = minute.Until
	}
	return end.Add(cooldownSlack)
}

// sealCooldown is a cool-down as Redis holds it at key: its end in clear
// (Unix ms, for setCooldownScript to compare), a space, then "errcode
// strikes end-Unix-ms" sealed for key.
func (g *Gate) sealCooldown(app, key string, cd quota.Cooldown) (string, error) {
	end := strconv.FormatInt(cd.Until.UnixMilli(), 10)
	sealed, err := g.c.seal(app, []byte(strconv.Itoa(int(cd.Code))+" "+strconv.Itoa(cd.Strikes)+" "+end), key)
	if err != nil {
		return "", err
	}
	return end + " " + string(sealed), nil
}

// openCooldown reads a value sealCooldown made for key: it must open,
// name a quota errcode that closes an endpoint, end where its clear part
// says, no earlier than oldest and no later than any window that starts
// at now allows. Anything else is not believed (and counted).
func (g *Gate) openCooldown(app, key, value string, now, oldest time.Time) (quota.Cooldown, error) {
	cd, err := g.parseCooldown(app, key, value, now, oldest)
	if err != nil {
		g.c.unsealed(UnsealedCooldown)
		g.log.Debug("fleet: a cool-down in Redis is not believed: deciding locally", "key", key, "error", err.Error())
	}
	return cd, err
}

func (g *Gate) parseCooldown(app, key, value string, now, oldest time.Time) (quota.Cooldown, error) {
	end, sealed, ok := strings.Cut(value, " ")
	if !ok {
		return quota.Cooldown{}, errors.New("fleet: cool-down: not \"end sealed\"")
	}
	plain, err := g.c.keys.Open(app, []byte(sealed), key)
	if err != nil {
		return quota.Cooldown{}, errors.New("fleet: cool-down: does not open")
	}
	fields := strings.Fields(string(plain))
	if len(fields) != 3 || fields[2] != end {
		return quota.Cooldown{}, errors.New("fleet: cool-down: its end in clear is not the sealed one")
	}
	code, err1 := strconv.Atoi(fields[0])
	strikes, err2 := strconv.Atoi(fields[1])
	untilMs, err3 := strconv.ParseInt(fields[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return quota.Cooldown{}, errors.New("fleet: cool-down: want \"errcode strikes end\"")
	}
	cd := quota.Cooldown{Code: wechat.Errcode(code), Strikes: strikes, Until: time.UnixMilli(untilMs)}
	switch {
	case cd.Code != wechat.DailyQuota && cd.Code != wechat.MinuteQuota && cd.Code != wechat.LinksDailyQuota:
		return quota.Cooldown{}, fmt.Errorf("fleet: cool-down: errcode %d closes no endpoint", code)
	case strikes < 0 || strikes > maxStrikes:
		return quota.Cooldown{}, fmt.Errorf("fleet: cool-down: %d strikes", strikes)
	case cd.Until.Before(oldest):
		return quota.Cooldown{}, errors.New("fleet: cool-down: ended long ago (replayed)")
	case cd.Until.After(g.cooldownBound(now)):
		return quota.Cooldown{}, errors.New("fleet: cool-down: ends later than any window allows")
	}
	return cd, nil
}

// ceilMilli rounds t up to the millisecond, PXAT's unit, so that the key
// never expires before the cool-down ends.
func ceilMilli(t time.Time) time.Time {
	ms := time.UnixMilli(t.UnixMilli())
	if ms.Before(t) {
		ms = ms.Add(time.Millisecond)
	}
	return ms
}
