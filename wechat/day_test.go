package wechat

import (
	"testing"
	"time"
)

func TestNextMidnightIsChinasMidnight(t *testing.T) {
	for _, tc := range []struct{ at, want time.Time }{
		// 15:59:59 UTC is 23:59:59 in China: the day ends a second later.
		{time.Date(2026, 11, 24, 15, 59, 59, 0, time.UTC), time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC)},
		// 16:00 UTC is China's midnight: a new day, ending 24 h later.
		{time.Date(2026, 11, 24, 16, 0, 0, 0, time.UTC), time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)},
		// UTC's midnight is 08:00 in China, mid-day.
		{time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)},
		{time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 16, 0, 0, 0, time.UTC)},
	} {
		if got := NextMidnight(tc.at); !got.Equal(tc.want) {
			t.Errorf("NextMidnight(%v) = %v, want %v", tc.at, got.UTC(), tc.want)
		}
	}
}
