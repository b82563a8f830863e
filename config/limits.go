package config

import (
	"fmt"
	"strconv"
	"strings"
)

var limitUnits = map[string]float64{"s": 1, "m": 60, "h": 3600, "d": 86400}

// parseLimits reads UPSTREAM_LIMITS: comma-separated PATH=N/UNIT[:BURST],
// UNIT one of s, m, h, d. So that no window of one UNIT ever carries more
// than N calls, the bucket refills at (N − BURST) per UNIT; BURST defaults
// to a tenth of N (at least 1) and must stay below N.
//
//	/wxa/getwxacodeunlimit=5000/m:50  →  rate (5000−50)/60 = 82.5/s, burst 50
func parseLimits(s string) (map[string]RateLimit, []error) {
	limits := map[string]RateLimit{}
	var problems []error
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		bad := func(why string) {
			problems = append(problems, fmt.Errorf("UPSTREAM_LIMITS: %q: %s (want PATH=N/UNIT[:BURST], e.g. /wxa/generatescheme=100/s)", entry, why))
		}
		path, spec, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(path, "/") {
			bad("the path must start with /")
			continue
		}
		lim, why := parseRate(spec)
		if why != "" {
			bad(why)
			continue
		}
		if _, dup := limits[path]; dup {
			bad("path listed twice")
			continue
		}
		limits[path] = lim
	}
	return limits, problems
}

// parseRate reads one N/UNIT[:BURST] (see parseLimits), or says why it
// cannot.
func parseRate(spec string) (RateLimit, string) {
	spec, burstText, hasBurst := strings.Cut(spec, ":")
	countText, unit, ok := strings.Cut(spec, "/")
	seconds, unitOK := limitUnits[unit]
	count, err := strconv.Atoi(countText)
	if !ok || !unitOK || err != nil || count < 2 {
		return RateLimit{}, "N must be a whole number of at least 2 and UNIT one of s, m, h, d"
	}
	burst := max(count/10, 1)
	if hasBurst {
		if burst, err = strconv.Atoi(burstText); err != nil || burst < 1 || burst >= count {
			return RateLimit{}, "BURST must be a whole number from 1 to N-1"
		}
	}
	return RateLimit{Rate: float64(count-burst) / seconds, Burst: burst}, ""
}
