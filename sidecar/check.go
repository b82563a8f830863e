package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxa-sidecar/wxa-sidecar/config"
	"github.com/wxa-sidecar/wxa-sidecar/fleet"
	"github.com/wxa-sidecar/wxa-sidecar/store"
	"github.com/wxa-sidecar/wxa-sidecar/wechat"
)

// Validate finds the configuration problems config.Load cannot see,
// because they need another part's knowledge: the known endpoints, the
// listen addresses' form, the Redis URL as go-redis reads it and the CA
// file as TLS reads it. Each problem is one line that names its variable
// and what is expected; it never echoes a secret. It reaches nothing over
// the network (see CheckConnections).
func Validate(cfg config.Config) []error {
	var p []error
	for _, name := range []struct{ name, addr string }{
		{"LISTEN_ADDR", cfg.ListenAddr}, {"ADMIN_ADDR", cfg.AdminAddr}, {"QRCODE_ADDR", cfg.QRCodeAddr},
	} {
		if name.addr == "" {
			continue
		}
		if err := checkListenAddr(name.addr); err != nil {
			p = append(p, fmt.Errorf("%s: %q %v", name.name, name.addr, err))
		}
	}
	var unknown []string
	for apiPath := range cfg.Limits {
		if !wechat.IsKnownEndpoint(apiPath) {
			unknown = append(unknown, apiPath)
		}
	}
	if len(unknown) > 0 {
		p = append(p, fmt.Errorf("UPSTREAM_LIMITS: %s: not a known endpoint (known: %s)",
			strings.Join(unknown, ", "), strings.Join(wechat.KnownEndpoints(), ", ")))
	}
	if cfg.RedisURL != "" {
		if err := checkRedisURL(cfg.RedisURL); err != nil {
			p = append(p, err)
		} else if c, err := fleet.New(fleetOptions(cfg, nil)); err != nil {
			p = append(p, fleetProblem(err))
		} else {
			c.Close()
		}
	}
	if cfg.StoreURL != "" {
		// Open checks the URL's form and the apps' keys; it reaches
		// nothing before the first operation, and Close ends that.
		if st, err := store.Open(storeOptions(cfg)); err != nil {
			p = append(p, storeProblem(err))
		} else {
			closed, cancel := context.WithCancel(context.Background())
			cancel()
			st.Close(closed)
		}
	}
	return p
}

// storeProblem turns the store's error into a line naming STORE_URL.
func storeProblem(err error) error {
	msg := strings.TrimPrefix(err.Error(), "store: ")
	msg = strings.TrimPrefix(msg, "STORE_URL: ")
	return fmt.Errorf("STORE_URL: %s", msg)
}

// checkListenAddr says what is wrong with a listen address, or nil.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("is not HOST:PORT (e.g. 127.0.0.1:8080, or :8080 for every interface)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("has port %q: want a number from 0 to 65535", port)
	}
	return nil
}

// checkRedisURL says which part of REDIS_URL is wrong, never echoing the
// URL (it may hold the password).
func checkRedisURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("REDIS_URL: does not parse: %v", ue.Err)
		}
		return errors.New("REDIS_URL: does not parse")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("REDIS_URL: scheme %q: want redis:// or rediss://", u.Scheme)
	}
	if u.Query().Has("addr") {
		if _, err := redis.ParseClusterURL(raw); err != nil {
			return errors.New("REDIS_URL: not a valid Cluster URL (redis://HOST:PORT?addr=HOST:PORT&addr=...)")
		}
		return nil
	}
	if u.Host == "" {
		return errors.New("REDIS_URL: no host (want redis://HOST:PORT/DB)")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("REDIS_URL: port %q: want a number from 1 to 65535", port)
		}
	}
	if db := strings.Trim(path.Clean("/"+u.Path), "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return fmt.Errorf("REDIS_URL: database %q: want a number (redis://HOST:PORT/0)", db)
		}
	}
	if _, err := redis.ParseURL(raw); err != nil {
		// go-redis's reasons name the part, never the password.
		return fmt.Errorf("REDIS_URL: %s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	return nil
}

// fleetProblem turns fleet.New's error into a line naming the variable.
func fleetProblem(err error) error {
	msg := strings.TrimPrefix(err.Error(), "fleet: ")
	if strings.HasPrefix(msg, "REDIS_") {
		// "REDIS_CA_FILE holds no PEM certificate" → "REDIS_CA_FILE: holds …",
		// so the variable leads the line as in every other problem.
		name, rest, _ := strings.Cut(msg, " ")
		if n, r, ok := strings.Cut(msg, ": "); ok && !strings.Contains(n, " ") {
			name, rest = n, r
		}
		return fmt.Errorf("%s: %s", strings.TrimSuffix(name, ":"), rest)
	}
	return fmt.Errorf("REDIS_URL: %s", msg)
}

// CheckConnections reaches what the configuration names, as `--check-config`
// does after Validate: with STORE_URL, whether the bucket exists and the
// credentials may see it (or the directory can be written); with
// REDIS_URL, a PING with the configured password (an unreachable server
// and a refused password are both problems). It never reaches WeChat.
func CheckConnections(ctx context.Context, cfg config.Config) []error {
	var p []error
	if cfg.StoreURL != "" {
		o := storeOptions(cfg)
		// One try, but long enough for a first TLS handshake.
		o.Timeout = max(cfg.StoreTimeout, 5*time.Second)
		ctx, cancel := context.WithTimeout(ctx, 2*o.Timeout)
		err := store.Check(ctx, o)
		cancel()
		if err != nil {
			p = append(p, storeProblem(err))
		}
	}
	if cfg.RedisURL != "" {
		o := fleetOptions(cfg, nil)
		// One try, but long enough for a server across a network.
		o.Timeout = max(cfg.RedisTimeout, 2*time.Second)
		c, err := fleet.New(o)
		if err != nil {
			return append(p, fleetProblem(err))
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(ctx, 2*o.Timeout)
		defer cancel()
		if err := c.Redis().Ping(ctx).Err(); err != nil {
			p = append(p, redisPingProblem(err))
		}
	}
	return p
}

// redisPingProblem says why a PING failed, without the password.
func redisPingProblem(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid password"):
		return errors.New("REDIS_URL: Redis refused the password (check REDIS_PASSWORD_FILE or the URL's password)")
	case strings.Contains(msg, "NOPERM"):
		return errors.New("REDIS_URL: the Redis user may not run PING (NOPERM): grant it the commands the sidecar uses")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("REDIS_URL: Redis did not answer in time")
	}
	return fmt.Errorf("REDIS_URL: Redis cannot be reached: %s", redactAddr(msg))
}

// redactAddr keeps a network error's reason and drops anything that could
// be a URL with its user info.
func redactAddr(msg string) string {
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}
