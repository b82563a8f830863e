//go:build fleetbench

package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// cpuTicks is the first line of /proc/stat: user nice system idle iowait
// irq softirq steal, in ticks; nil where there is none.
func cpuTicks() []int64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return nil
	}
	var ticks []int64
	for _, f := range fields[1:9] {
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks = append(ticks, n)
	}
	return ticks
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute figures.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

func stealPercent(before, after []int64) float64 {
	if len(before) != 8 || len(after) != 8 {
		return 0
	}
	var total int64
	for i := range after {
		total += after[i] - before[i]
	}
	if total == 0 {
		return 0
	}
	return 100 * float64(after[7]-before[7]) / float64(total)
}
