package wechat

import "time"

// ChinaTime is UTC+8, where WeChat's days begin: its daily quotas and the
// force_refresh count reset at midnight here. A fixed zone, so no tz
// database is needed in a distroless image.
var ChinaTime = time.FixedZone("UTC+8", 8*60*60)

// NextMidnight is when WeChat's day holding t ends: the next midnight in
// ChinaTime.
func NextMidnight(t time.Time) time.Time {
	y, m, d := t.In(ChinaTime).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, ChinaTime)
}

// WeChat's limit on stable_token's force_refresh, per appid:
// ForceRefreshesPerDay in a day of ChinaTime, ForceRefreshSpacing apart.
const (
	ForceRefreshesPerDay = 20
	ForceRefreshSpacing  = 30 * time.Second
)
