package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// A *wechat.Error, bare or wrapped, is answered in WeChat's words with its
// own status and, when it says when to come back, Retry-After.
func TestWriteErrorAnswersWeChatError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		status     int
		body       string
		retryAfter string
	}{
		{"as WeChat would", wechat.Errorf(wechat.InvalidScene, "invalid scene"),
			http.StatusOK, `{"errcode":40129,"errmsg":"invalid scene"}`, ""},
		{"wrapped", fmt.Errorf("wxacode: %w", wechat.Errorf(wechat.DataFormat, "data format error")),
			http.StatusOK, `{"errcode":47001,"errmsg":"data format error"}`, ""},
		{"the sidecar's refusal with a wait", &wechat.Error{Status: http.StatusTooManyRequests, Code: wechat.MinuteQuota,
			Msg: "api minute-quota reach limit", RetryAfter: 1500 * time.Millisecond},
			http.StatusTooManyRequests, `{"errcode":45011,"errmsg":"api minute-quota reach limit"}`, "2"},
		{"no status given", &wechat.Error{Code: wechat.InvalidPage, Msg: "invalid page"},
			http.StatusOK, `{"errcode":41030,"errmsg":"invalid page"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeError(rec, tt.err)
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Errorf("got %d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.body)
			}
			if got := rec.Header().Get("Content-Type"); got != jsonContentType {
				t.Errorf("got Content-Type %q, want %q", got, jsonContentType)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("got Retry-After %q, want %q", got, tt.retryAfter)
			}
		})
	}
}
