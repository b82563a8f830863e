//go:build fleetbench

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// flush empties Redis between runs, so no run finds another's entries.
func (b *bench) flush(ctx context.Context) error {
	if err := b.rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("fleet: FLUSHALL: %w", err)
	}
	return nil
}

// countRedis runs f, n requests to replica i of fl, and returns what
// they cost in Redis per request: the replica's round trips (from its
// metrics) by op, and the commands Redis ran (INFO commandstats, the
// commands of Lua scripts included, INFO's own left out), as table cells.
func (b *bench) countRedis(ctx context.Context, fl *fleet, i, n int, f func() error) (string, error) {
	tripsBefore, secsBefore, err := fl.redisRoundTrips(ctx, i)
	if err != nil {
		return "", err
	}
	before, err := b.commandStats(ctx)
	if err != nil {
		return "", err
	}
	if err := f(); err != nil {
		return "", err
	}
	after, err := b.commandStats(ctx)
	if err != nil {
		return "", err
	}
	tripsAfter, secsAfter, err := fl.redisRoundTrips(ctx, i)
	if err != nil {
		return "", err
	}
	perRequest := func(before, after map[string]int, skip string) (float64, string) {
		var total int
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(after)) {
			d := after[name] - before[name]
			if name == skip || d == 0 {
				continue
			}
			total += d
			if skip == "info" {
				name = strings.ToUpper(name)
			}
			parts = append(parts, fmt.Sprintf("%s %.2f", name, float64(d)/float64(n)))
		}
		if len(parts) == 0 {
			return 0, "none"
		}
		return float64(total) / float64(n), strings.Join(parts, ", ")
	}
	trips, byOp := perRequest(tripsBefore, tripsAfter, "")
	cmds, byCommand := perRequest(before, after, "info")
	var inRedis time.Duration
	var inRedisByOp []string
	for _, op := range slices.Sorted(maps.Keys(secsAfter)) {
		d := time.Duration(float64(time.Second) * (secsAfter[op] - secsBefore[op]) / float64(n))
		if d > 0 {
			inRedis += d
			inRedisByOp = append(inRedisByOp, op+" "+us(d))
		}
	}
	if len(inRedisByOp) > 0 {
		return fmt.Sprintf("%.2f | %s | %s (%s) | %.2f: %s", trips, byOp, us(inRedis), strings.Join(inRedisByOp, ", "), cmds, byCommand), nil
	}
	return fmt.Sprintf("%.2f | %s | 0 | %.2f: %s", trips, byOp, cmds, byCommand), nil
}

// metrics scrapes replica i's /metrics: each sample by its series as
// printed, name{labels}.
func (fl *fleet) metrics(ctx context.Context, i int) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+fl.replicas[i].admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := fl.clients[i].Do(req)
	if err != nil {
		return nil, fmt.Errorf("fleet: /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("fleet: /metrics: %w", err)
	}
	samples := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if line == "" || strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("fleet: /metrics line %q: %w", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, nil
}

// label is the value of label name in a series name{...}.
func label(series, name string) string {
	_, v, _ := strings.Cut(series, name+`="`)
	v, _, _ = strings.Cut(v, `"`)
	return v
}

// redisRoundTrips reads replica i's wxa_sidecar_redis_requests_total,
// summed by op, and the seconds its Redis calls took, by op
// (wxa_sidecar_redis_request_duration_seconds_sum).
func (fl *fleet) redisRoundTrips(ctx context.Context, i int) (trips map[string]int, seconds map[string]float64, err error) {
	samples, err := fl.metrics(ctx, i)
	if err != nil {
		return nil, nil, err
	}
	trips, seconds = map[string]int{}, map[string]float64{}
	for series, v := range samples {
		switch name, _, _ := strings.Cut(series, "{"); name {
		case "wxa_sidecar_redis_requests_total":
			trips[label(series, "op")] += int(v)
		case "wxa_sidecar_redis_request_duration_seconds_sum":
			seconds[label(series, "op")] += v
		}
	}
	if len(trips) == 0 {
		return nil, nil, errors.New("fleet: /metrics has no wxa_sidecar_redis_requests_total")
	}
	return trips, seconds, nil
}

// redisFailures is how many Redis calls of replica i failed (error,
// timeout, or skipped while the breaker was open), by op and result.
func (fl *fleet) redisFailures(ctx context.Context, i int) (map[string]int, error) {
	samples, err := fl.metrics(ctx, i)
	if err != nil {
		return nil, err
	}
	failures := map[string]int{}
	for series, v := range samples {
		result := label(series, "result")
		if strings.HasPrefix(series, "wxa_sidecar_redis_requests_total{") && v > 0 &&
			(result == "error" || result == "timeout" || result == "breaker_open") {
			failures[label(series, "op")+" "+result] += int(v)
		}
	}
	return failures, nil
}

// commandStats is INFO commandstats as calls by command name.
func (b *bench) commandStats(ctx context.Context) (map[string]int, error) {
	info, err := b.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("fleet: INFO commandstats: %w", err)
	}
	stats := map[string]int{}
	for line := range strings.SplitSeq(info, "\n") {
		// cmdstat_get:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		if n, err := strconv.Atoi(calls); err == nil {
			stats[name] = n
		}
	}
	return stats, nil
}
