// Package wechat is the sidecar's vocabulary of the WeChat server API: its
// errcodes, the one error type every part answers with, WeChat's day
// (ChinaTime) and its limit on force_refresh, and the names of the
// endpoints the sidecar knows.
//
// It owns words, not behaviour, and never imports a package of ours: every
// other package may import it.
package wechat

import (
	"net/http"
	"strconv"
	"time"
)

// Errcode is the errcode of a WeChat JSON answer; 0 is success. Its meaning
// depends on the endpoint (40129 is a bad scene on getwxacodeunlimit,
// something else on msg_sec_check).
type Errcode int

// Errcodes the sidecar branches on or answers with itself.
const (
	OK                 Errcode = 0
	SystemBusy         Errcode = -1    // system error, retry later
	InvalidCredential  Errcode = 40001 // token invalid or not the latest
	BadGrantType       Errcode = 40002
	InvalidAppID       Errcode = 40013
	InvalidToken       Errcode = 40014
	InvalidURL         Errcode = 40066
	InvalidArgs        Errcode = 40097 // often a bad env_version
	InvalidSecret      Errcode = 40125
	InvalidScene       Errcode = 40129 // scene characters
	InvalidPath        Errcode = 40159 // path empty or too long
	IPNotWhitelisted   Errcode = 40164
	SecretFrozen       Errcode = 40243
	InvalidSceneLength Errcode = 40169
	MissingToken       Errcode = 41001
	MissingSecret      Errcode = 41004
	InvalidPage        Errcode = 41030
	TokenExpired       Errcode = 42001
	NeedPOST           Errcode = 43002
	InvalidLinkPath    Errcode = 40165 // links: the page does not exist
	InvalidLinkQuery   Errcode = 40212 // links: query too long or of bad characters
	TooFrequent        Errcode = 44990 // links: the per-second limit
	LinksDailyQuota    Errcode = 44993 // generatescheme + generate_urllink: the day's cap
	DailyQuota         Errcode = 45009
	MinuteQuota        Errcode = 45011
	LifetimeQuota      Errcode = 45029 // per parameter set, never per endpoint
	NoPermission       Errcode = 45063 // never retried
	DataFormat         Errcode = 47001
	Unauthorized       Errcode = 48001
	IPNotRegistered    Errcode = 61004 // the IP-whitelist refusal, newer spelling
	ScancodeTime       Errcode = 85096 // scancode_time is reserved
	AdminConfirm       Errcode = 89503 // stable_token: an admin must confirm this IP
	AdminRefused24h    Errcode = 89506 // stable_token: an admin refused this IP for 24 h
	AdminRefused1h     Errcode = 89507 // stable_token: an admin refused this IP for 1 h

	PermanentLinksQuota Errcode = 85400 // short links: the app's 100 000 permanent ones are spent, for life
	InvalidExpiry       Errcode = 85401 // links: expire_time or expire_interval out of range
	InvalidEnvVersion   Errcode = 85402 // links: env_version not release, trial or develop
	InvalidNFCModel     Errcode = 9800003
	NFCSchemeExists     Errcode = 9800010 // an NFC scheme asked again (undocumented)
)

// named are the errcodes above: the ones a metric label may carry as
// themselves (every other is "other", so the label stays bounded).
var named = map[Errcode]bool{
	SystemBusy: true, InvalidCredential: true, BadGrantType: true, InvalidAppID: true, InvalidToken: true,
	InvalidURL: true, InvalidArgs: true, InvalidSecret: true, InvalidScene: true, InvalidPath: true,
	IPNotWhitelisted: true, SecretFrozen: true, InvalidSceneLength: true, MissingToken: true, MissingSecret: true,
	InvalidPage: true, TokenExpired: true, NeedPOST: true, TooFrequent: true, LinksDailyQuota: true,
	DailyQuota: true, MinuteQuota: true, LifetimeQuota: true, NoPermission: true, DataFormat: true,
	Unauthorized: true, IPNotRegistered: true, ScancodeTime: true, AdminConfirm: true, AdminRefused24h: true,
	AdminRefused1h: true, InvalidLinkPath: true, InvalidLinkQuery: true, PermanentLinksQuota: true,
	InvalidExpiry: true, InvalidEnvVersion: true, InvalidNFCModel: true, NFCSchemeExists: true,
}

// Named reports whether c is one of the errcodes named here.
func (c Errcode) Named() bool { return named[c] }

// IsTokenError reports the errcodes that mean "fetch a fresh token and
// replay once": 40001, 40014, 42001. Not 41001 (no token was sent) nor
// 48001 (the API is not authorized).
func (c Errcode) IsTokenError() bool {
	return c == InvalidCredential || c == InvalidToken || c == TokenExpired
}

// IsQuota reports WeChat's quota errcodes.
func (c Errcode) IsQuota() bool {
	return c == DailyQuota || c == MinuteQuota || c == LifetimeQuota
}

// String is the errcode as WeChat writes it.
func (c Errcode) String() string { return strconv.Itoa(int(c)) }

// Error is an answer in WeChat's words: an errcode and errmsg, the HTTP
// status the sidecar sends it with on WeChat paths and, for a quota, how
// long until asking again can succeed. It is the one errcode type: the
// token manager's failed fetch, a quota refusal (which unwraps to one) and
// WeChat's answer to a call all read as a *Error.
type Error struct {
	// Status is 200 for WeChat's answer to the call itself, 4xx or 502
	// for the sidecar's own refusals, and 0 for WeChat's words about
	// something else than the call: the errcode of the token fetch it
	// needed, or a quota refusal that kept it from WeChat. A renderer
	// sends 0 with 200, as WeChat would; a replica never hands an answer
	// with Status 0 to another replica's callers as theirs.
	Status     int
	Code       Errcode
	Msg        string
	RetryAfter time.Duration // 0: none
}

func (e *Error) Error() string { return "wechat: errcode " + e.Code.String() + ": " + e.Msg }

// Errorf returns an HTTP 200 error in WeChat's words, as WeChat would send.
func Errorf(code Errcode, msg string) *Error {
	return &Error{Status: http.StatusOK, Code: code, Msg: msg}
}
