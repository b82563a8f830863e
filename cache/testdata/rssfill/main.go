// Command rssfill is TestResidentMemoryStaysBounded's child: built without
// the race detector (whose shadow memory would swamp the figure), it sets
// the memory limit main sets, inserts ten times -max bytes of distinct
// images and prints its resident memory.
package main

import (
	"bufio"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
)

func main() {
	maxBytes := flag.Int64("max", 64<<20, "CACHE_MAX_BYTES")
	size := flag.Int("size", 100<<10, "bytes per image")
	flag.Parse()
	// As main does when GOGC and GOMEMLIMIT are unset.
	debug.SetMemoryLimit(cache.MemoryLimit(*maxBytes))
	debug.SetGCPercent(cache.GCPercent)
	m, err := cache.NewMemory(cache.Options{MaxBytes: *maxBytes, TTL: time.Hour})
	if err != nil {
		panic(err)
	}
	var peak int64
	for i := range int(10 * *maxBytes / int64(*size)) {
		b := make([]byte, *size)
		for j := range b {
			b[j] = byte(i + j)
		}
		m.Set(sha256.Sum256([]byte(strconv.Itoa(i))), cache.NewEntry(b, "image/jpeg", "attachment"))
		if i%32 == 0 {
			peak = max(peak, status("VmRSS"))
		}
	}
	s := m.Stats()
	fmt.Printf("RSS_KB=%d PEAK_KB=%d HWM_KB=%d CACHE_BYTES=%d ENTRIES=%d\n",
		status("VmRSS"), max(peak, status("VmRSS")), status("VmHWM"), s.Bytes, s.Entries)
}

func status(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
