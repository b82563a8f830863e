package main

// Tests of run itself, in process: flags, config errors, the logger. The
// sidecar's end-to-end tests (real processes) are in e2e/.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, map[string]string{}, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := out.String(); got != "wxa-sidecar dev\n" {
		t.Errorf("--version printed %q", got)
	}
}

func TestInvalidConfigExitsWithStatus2(t *testing.T) {
	var stderr bytes.Buffer
	env := map[string]string{"WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET": "s3cr3t-value", "UPSTREAM_TIMEOUT": "ten", "MAX_BODY_BYTES": "1MB"}
	code := run(context.Background(), nil, env, io.Discard, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) < 2 {
		t.Errorf("want one line per problem, got %q", stderr.String())
	}
	for _, v := range []string{"UPSTREAM_TIMEOUT", "MAX_BODY_BYTES"} {
		if !strings.Contains(stderr.String(), v) {
			t.Errorf("stderr does not name %s: %q", v, stderr.String())
		}
	}
	if strings.Contains(stderr.String(), "s3cr3t-value") {
		t.Error("stderr carries the secret")
	}
}

func TestUnknownFlagExits2PointingAtHelp(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(t.Context(), []string{"--no-such-flag"}, map[string]string{}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "--help") {
		t.Errorf("stderr %q does not point at --help", stderr.String())
	}
}

func TestLoggerWritesEveryDurationAsAString(t *testing.T) {
	prevOut, prevFlags, prevDefault := log.Writer(), log.Flags(), slog.Default()
	t.Cleanup(func() {
		slog.SetDefault(prevDefault)
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
		slog.SetLogLoggerLevel(slog.LevelInfo)
	})
	var out bytes.Buffer
	logger := newLogger(&out, slog.LevelInfo)
	logger.Info("x", "wait", 25*time.Second)
	logger.WithGroup("g").Info("y", "d", 1500*time.Millisecond)
	logger.Info("z", slog.Group("h", slog.Duration("d", time.Minute)))
	for _, want := range []string{`"wait":"25s"`, `"g":{"d":"1.5s"}`, `"h":{"d":"1m0s"}`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log %s lacks %s", out.String(), want)
		}
	}
}

func TestNewLoggerRoutesPackageLogThroughJSON(t *testing.T) {
	prevOut, prevFlags, prevDefault := log.Writer(), log.Flags(), slog.Default()
	t.Cleanup(func() {
		slog.SetDefault(prevDefault)
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
		slog.SetLogLoggerLevel(slog.LevelInfo)
	})
	var out bytes.Buffer
	newLogger(&out, slog.LevelInfo)
	log.Printf("http: superfluous response.WriteHeader call from %s", "somewhere")
	var line struct {
		Level, Msg string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &line); err != nil {
		t.Fatalf("package log wrote %q, not one JSON line: %v", out.String(), err)
	}
	if line.Level != "WARN" || !strings.HasPrefix(line.Msg, "http: superfluous response.WriteHeader call") {
		t.Errorf("got %+v, want level WARN and the message", line)
	}
}

// REDIS_URL asking not to verify the server's certificate is a
// configuration error: exit 2, one line, never the URL's password.
func TestRedisURLWithSkipVerifyExits2(t *testing.T) {
	for _, u := range []string{"rediss://:pw-in-url@127.0.0.1:6380/0?skip_verify=true", "rediss://127.0.0.1:6380/0?skip_verify=false"} {
		var stderr bytes.Buffer
		env := map[string]string{"WECHAT_APP_ID": "wx1", "WECHAT_APP_SECRET": "s3cr3t-value", "REDIS_URL": u}
		if code := run(context.Background(), nil, env, io.Discard, &stderr); code != 2 {
			t.Errorf("%s: exit %d, want 2", u, code)
		}
		out := strings.TrimSpace(stderr.String())
		if lines := strings.Split(out, "\n"); len(lines) != 1 || !strings.Contains(out, "skip_verify") {
			t.Errorf("%s: stderr %q, want one line naming skip_verify", u, out)
		}
		if strings.Contains(out, "pw-in-url") || strings.Contains(out, "s3cr3t-value") {
			t.Errorf("stderr carries a secret: %q", out)
		}
	}
}
