package main

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// The fault kinds.
const (
	kRevoke      = "token_revoke"
	kSticky      = "token_sticky"
	kBusy        = "busy_burst"
	k500         = "http500_burst"
	kTruncated   = "truncated_images"
	kCorrupt     = "corrupt_images"
	kLatency     = "latency_spike"
	k45011       = "errcode_45011"
	kRedisKill   = "redis_kill"
	kRedisPause  = "redis_pause"
	kReplicaTerm = "replica_sigterm"
	kReplicaKill = "replica_sigkill"
)

var allKinds = []string{kRevoke, kSticky, kBusy, k500, kTruncated, kCorrupt, kLatency, k45011,
	kRedisKill, kRedisPause, kReplicaTerm, kReplicaKill}

var kindHelp = map[string]string{
	kRevoke:      "every token issued so far dies (40001); a normal fetch gets a new one",
	kSticky:      "every token dies and normal-mode stable_token fetches keep returning the dead one until a forced refresh (at most 20 s)",
	kBusy:        "code calls answer errcode -1 for 2-4 s",
	k500:         "code calls answer HTTP 500 for 2-4 s",
	kTruncated:   "half of the code calls send half the image, then close (3-5 s)",
	kCorrupt:     "half of the code calls answer an image that does not decode (3-5 s)",
	kLatency:     "every call waits 1-3 s before its answer (3-6 s)",
	k45011:       "code calls answer 45011 for 1 s (the fleet cools the endpoint down to the next minute); once a run",
	kRedisKill:   "redis-server SIGKILLed, started again empty on its port 3-6 s later",
	kRedisPause:  "redis-server SIGSTOPped for 3-5 s",
	kReplicaTerm: "a replica SIGTERMed, started again on its ports 2-4 s after it exits",
	kReplicaKill: "a replica SIGKILLed, started again on its ports 2-4 s later",
}

// group is what a kind disturbs; faults of one group never overlap, so
// each is seen alone by what it disturbs.
func group(kind string) string {
	switch kind {
	case kRevoke, kSticky:
		return "token"
	case kRedisKill, kRedisPause:
		return "redis"
	case kReplicaTerm, kReplicaKill:
		return "replica"
	}
	return "upstream"
}

// fault is one planned fault and what became of it. Times are seconds
// since the load started.
type fault struct {
	Kind    string  `json:"kind"`
	At      float64 `json:"at_s"`
	For     float64 `json:"for_s"` // planned length (0: instantaneous)
	Replica int     `json:"replica,omitempty"`
	Delay   float64 `json:"delay_s,omitempty"` // latency spikes
	Share   float64 `json:"share,omitempty"`   // of the calls a burst affects
	// Started and Ended are when the fault really began and ended (a
	// replica restart ends when it is ready again).
	Started float64 `json:"started_s"`
	Ended   float64 `json:"ended_s"`
	Note    string  `json:"note,omitempty"`
}

// parseKinds reads -faults.
func parseKinds(s string) ([]string, error) {
	if s == "" || s == "all" {
		return slices.Clone(allKinds), nil
	}
	var kinds []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if f == "none" {
			return nil, nil
		}
		if !slices.Contains(allKinds, f) {
			return nil, fmt.Errorf("soak: -faults: unknown kind %q (-faults list lists them)", f)
		}
		kinds = append(kinds, f)
	}
	return kinds, nil
}

// plan places perKind faults of each kind at random times of a run of
// length d: after a few seconds of calm, ending at least 15 s before the
// load stops so the fleet can recover before the end's checks. Faults of
// one group are at least gap apart; two sticky token faults at least 35 s
// (WeChat's force_refresh is 30 s apart). 45011 cools the whole fleet's
// endpoint down until the next minute, so there is one, in the last third.
func plan(rng *rand.Rand, kinds []string, perKind int, d time.Duration, replicas int) []fault {
	start, end := 3.0, d.Seconds()-15
	if perKind <= 0 {
		perKind = max(1, int(math.Round(d.Seconds()/200)))
	}
	var todo []fault
	for _, k := range kinds {
		n := perKind
		if k == k45011 {
			// Each closes the endpoint for up to a minute: more would
			// leave the faults after it nothing to act on.
			n = 1
		}
		for range n {
			f := fault{Kind: k}
			switch k {
			case kBusy, k500:
				f.For, f.Share = 2+2*rng.Float64(), 1
			case k45011:
				f.For, f.Share = 1, 1
			case kTruncated, kCorrupt:
				f.For, f.Share = 3+2*rng.Float64(), 0.5
			case kLatency:
				f.For, f.Delay = 3+3*rng.Float64(), 1+2*rng.Float64()
			case kSticky:
				f.For = 20 // at most; a forced refresh ends it
			case kRedisKill:
				f.For = 3 + 3*rng.Float64()
			case kRedisPause:
				f.For = 3 + 2*rng.Float64()
			case kReplicaTerm, kReplicaKill:
				f.For, f.Replica = 2+2*rng.Float64(), rng.IntN(replicas)
			}
			todo = append(todo, f)
		}
	}
	rng.Shuffle(len(todo), func(i, j int) { todo[i], todo[j] = todo[j], todo[i] })
	// The most constrained first (45011 in the last third, sticky tokens
	// 35 s apart), then the longest, so that every fault finds room.
	constrained := func(f fault) bool { return f.Kind == k45011 || f.Kind == kSticky }
	slices.SortStableFunc(todo, func(a, b fault) int {
		if constrained(a) != constrained(b) {
			if constrained(a) {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.For, a.For)
	})
	var placed []fault
	for _, f := range todo {
		lo := start
		if f.Kind == k45011 {
			lo = start + 2*(end-start)/3
		}
		room := max(0, end-f.For-lo)
		// A random time; where it does not fit, the next that does after
		// it (round the window), in steps of a quarter second.
		first := rng.Float64() * room
		for step := 0.0; step <= room; step += 0.25 {
			f.At = lo + math.Mod(first+step, room+0.25)
			if f.At+f.For <= end && fits(placed, f) {
				placed = append(placed, f)
				break
			}
		}
	}
	slices.SortFunc(placed, func(a, b fault) int { return cmp.Compare(a.At, b.At) })
	return placed
}

func fits(placed []fault, f fault) bool {
	gap := 1.5
	if group(f.Kind) == "replica" || group(f.Kind) == "redis" {
		gap = 8 // a restart takes a few seconds beyond the planned length
	}
	for _, p := range placed {
		if group(p.Kind) != group(f.Kind) {
			continue
		}
		g := gap
		if p.Kind == kSticky && f.Kind == kSticky {
			g = 35
		}
		if f.At < p.At+p.For+g && p.At < f.At+f.For+g {
			return false
		}
	}
	return true
}
