package pregen

import (
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

func TestMinuteQuotaWaitsForRetryAfterElseTheNextMinute(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 50, 0, time.UTC)
	p := &pacer{now: func() time.Time { return now }}
	p.minuteQuota(0, now)
	if want := time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC).Add(minuteMargin); !p.resumeAt.Equal(want) {
		t.Errorf("without Retry-After: resume at %v, want %v", p.resumeAt, want)
	}
	p.minuteQuota(3*time.Second, now) // earlier than the pause in force: changes nothing
	p.minuteQuota(30*time.Second, now)
	if want := now.Add(30 * time.Second); !p.resumeAt.Equal(want) {
		t.Errorf("Retry-After 30s: resume at %v, want %v", p.resumeAt, want)
	}
}

func TestDailyQuotaOnUnlimitedWaitsOnceThenStops(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &pacer{now: func() time.Time { return t0 }}
	if !p.dailyQuota(t0.Add(-time.Second), t0) {
		t.Fatal("first 45009 stopped the run; want a one-minute pause")
	}
	if want := t0.Add(time.Minute); !p.resumeAt.Equal(want) {
		t.Errorf("resume at %v, want %v", p.resumeAt, want)
	}
	if !p.dailyQuota(t0, t0.Add(time.Second)) {
		t.Error("a 45009 to a request sent before the pause ended stopped the run")
	}
	if p.dailyQuota(t0.Add(time.Minute+time.Second), t0.Add(time.Minute+2*time.Second)) {
		t.Error("a 45009 after the pause went on; want the run stopped")
	}
}

func TestWhatStopsTheRun(t *testing.T) {
	for code, want := range map[wechat.Errcode]bool{40001: true, 40014: true, 42001: true, 40125: true, 40164: true,
		61004: true, 48001: true, 45063: true, 45029: false, 45011: false, -1: false, 41030: false, 40097: false} {
		if got := stopsTheRun(code); got != want {
			t.Errorf("stopsTheRun(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestFileNames(t *testing.T) {
	s := newStems()
	for _, tc := range []struct{ name, want string }{
		{"table 1", "table_1"},
		{"../../etc/passwd", "_._.._etc_passwd"},
		{"a=1&b=2", "a=1_b=2"},
		{"table_1", "table_1~2"}, // collides with the first
		{"TABLE_1", "TABLE_1~3"}, // ... on a case-insensitive file system too
		{"桌子", "______"},
		{"", "_"},
		{"pages/index?id=7", "pages_index_id=7"},
	} {
		if got := s.assign(tc.name); got != tc.want {
			t.Errorf("assign(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := len(safeStem(string(make([]byte, 1000)))); got != maxStem {
		t.Errorf("a 1000-byte name gives a %d-byte stem, want %d", got, maxStem)
	}
	for img, want := range map[string]string{"\xFF\xD8\xFF\xE0": ".jpg", "\x89PNG\r\n\x1a\n....": ".png", `{"errcode":0}`: ""} {
		if got := imageExt([]byte(img)); got != want {
			t.Errorf("imageExt(%q) = %q, want %q", img, got, want)
		}
	}
}

// A name starting with a dot is neither hidden nor taken for one of the
// run's temporary files (".pregen-…"), which a rerun deletes.
func TestALeadingDotIsReplaced(t *testing.T) {
	for name, want := range map[string]string{".pregen-vip": "_pregen-vip", ".": "_", "a.b": "a.b"} {
		if got := safeStem(name); got != want {
			t.Errorf("safeStem(%q) = %q, want %q", name, got, want)
		}
	}
}
