// Command wxa-sidecar runs beside a backend and makes the WeChat
// mini-program API safe and cheap to call: a managed access_token, cached
// code images, rate limits and metrics. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/wxa-sidecar/wxa-sidecar/cache"
	"github.com/wxa-sidecar/wxa-sidecar/config"
	"github.com/wxa-sidecar/wxa-sidecar/pregen"
	"github.com/wxa-sidecar/wxa-sidecar/sidecar"
	"github.com/wxa-sidecar/wxa-sidecar/wechattest"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], config.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status. The sidecar stops
// when ctx is done (SIGTERM).
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "pregen" {
		// A client of a running sidecar, not a sidecar: no config, no token.
		return pregen.Main(ctx, args[1:], stdout, stderr)
	}
	flags := flag.NewFlagSet("wxa-sidecar", flag.ContinueOnError)
	flags.SetOutput(stderr)
	demo := flags.Bool("demo", false, "run against a built-in fake WeChat on loopback, with demo credentials")
	showVersion := flags.Bool("version", false, "print the version and exit")
	checkConfig := flags.Bool("check-config", false, "check the configuration (files, limits, URLs, a Redis PING) and exit: 0 if it is good, 2 naming each problem")
	var showHelp bool
	flags.BoolVar(&showHelp, "help", false, "print this help and exit")
	flags.BoolVar(&showHelp, "h", false, "print this help and exit")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: wxa-sidecar [--demo] [--version] [--help]; configured by the environment (--help lists it)")
	}
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if showHelp {
		writeHelp(stdout, flags)
		return 0
	}
	if *showVersion {
		fmt.Fprintln(stdout, "wxa-sidecar", version)
		return 0
	}
	if *demo {
		fake := wechattest.NewServer(wechattest.Options{})
		defer fake.Close()
		for _, k := range []string{"WECHAT_APP_SECRET_FILE", "WECHAT_APPS_FILE"} {
			delete(environ, k)
		}
		environ["WECHAT_APP_ID"] = wechattest.DemoAppID
		environ["WECHAT_APP_SECRET"] = wechattest.DemoSecret
		environ["WECHAT_API_URL"] = fake.URL
	}
	cfg, problems := loadConfig(environ)
	if *checkConfig && len(problems) == 0 {
		for _, p := range sidecar.CheckConnections(ctx, cfg) {
			problems = append(problems, p.Error())
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, "wxa-sidecar: config:", p)
		}
		return 2
	}
	if *checkConfig {
		fmt.Fprintln(stdout, "wxa-sidecar: configuration OK")
		return 0
	}
	log := newLogger(stderr, cfg.LogLevel())
	if environ["GOMEMLIMIT"] == "" {
		// Without a limit the heap may grow to twice the cache before a GC.
		debug.SetMemoryLimit(cache.MemoryLimit(cfg.CacheMaxBytes))
		// Under a limit of our own, with its margin, GC can run less often.
		if environ["GOGC"] == "" {
			debug.SetGCPercent(cache.GCPercent)
		}
	}

	s, err := sidecar.New(cfg, log, version)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	defer s.Close()
	if err := s.Listen(); err != nil {
		log.Error("cannot listen", "error", err)
		return 1
	}
	log.Info("wxa-sidecar started", "version", version, "api", s.APIAddr().String(),
		"admin", s.AdminAddr().String(), "config", cfg, "demo", *demo)
	serveErr := s.Start()
	if *demo {
		fmt.Fprintf(stdout, "curl -sS -o qrcode.jpg -X POST 'http://%s/wxa/getwxacodeunlimit' -d '{\"scene\":\"hello\"}'\n",
			loopbackAddr(s.APIAddr()))
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		log.Error("server failed", "error", err)
		return 1
	}
	s.Stop()
	return 0
}

// loadConfig reads the configuration and every problem with it: config's
// own checks, then those needing the parts' knowledge (sidecar.Validate),
// each variable reported once. A problem is one line naming its variable.
func loadConfig(environ map[string]string) (config.Config, []string) {
	cfg, err := config.Load(environ)
	var problems []string
	reported := map[string]bool{}
	if err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			problems = append(problems, line)
			name, _, _ := strings.Cut(line, ":")
			reported[name] = true
		}
	}
	for _, p := range sidecar.Validate(cfg) {
		if name, _, _ := strings.Cut(p.Error(), ":"); !reported[name] {
			problems = append(problems, p.Error())
		}
	}
	return cfg, problems
}

// newLogger returns the JSON logger every line on stderr goes through and
// makes it the default, so what the standard library prints with package
// log (http.Transport's "Unsolicited response received on idle HTTP
// channel", for one) is JSON too, at WARN.
func newLogger(stderr io.Writer, level slog.Leveler) *slog.Logger {
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: durationAsString}))
	// A JSON handler writes to stderr itself, never back through package
	// log, so routing package log into it cannot loop.
	slog.SetDefault(log)
	slog.SetLogLoggerLevel(slog.LevelWarn)
	return log
}

// durationAsString writes a duration as Go does ("25s"), wherever it is
// logged: the JSON handler's default, a number of nanoseconds
// (25000000000), is unreadable.
func durationAsString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// loopbackAddr names a bound address a local curl can reach.
func loopbackAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		_, port, _ := net.SplitHostPort(a.String())
		return net.JoinHostPort("127.0.0.1", port)
	}
	return a.String()
}
