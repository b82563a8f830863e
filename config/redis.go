package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// validateRedis checks the shared tier's variables; the URL's own form is
// go-redis's to judge (redis://, rediss://, or a Cluster's addr= list).
func (c *Config) validateRedis() []error {
	var p []error
	if c.FleetSize < 1 {
		p = append(p, fmt.Errorf("FLEET_SIZE: %d must be at least 1", c.FleetSize))
	}
	if c.RedisTimeout <= 0 {
		p = append(p, fmt.Errorf("REDIS_TIMEOUT: %s must be above 0", c.RedisTimeout))
	}
	if c.RedisURL == "" {
		if c.RedisPasswordFile != "" || c.RedisCAFile != "" {
			p = append(p, errors.New("REDIS_PASSWORD_FILE, REDIS_CA_FILE: set REDIS_URL too, or neither"))
		}
		return p
	}
	// The URL's form (scheme, host, port, database) is checked where
	// go-redis is known: sidecar.Validate, which says which part is wrong.
	if u, err := url.Parse(c.RedisURL); err == nil && skipsVerify(u) {
		p = append(p, errors.New("REDIS_URL: skip_verify turns off the check of the Redis server's certificate, "+
			"so anyone on the path could read and answer as Redis; not allowed (for a private CA, set REDIS_CA_FILE)"))
	}
	if c.RedisPasswordFile != "" {
		b, err := os.ReadFile(c.RedisPasswordFile)
		if err != nil {
			p = append(p, fmt.Errorf("REDIS_PASSWORD_FILE: cannot read %s: %w", c.RedisPasswordFile, errors.Unwrap(err)))
		} else {
			c.RedisPassword = strings.TrimSpace(string(b))
		}
	}
	if c.RedisCAFile != "" {
		if _, err := os.Stat(c.RedisCAFile); err != nil {
			p = append(p, fmt.Errorf("REDIS_CA_FILE: cannot read %s: %w", c.RedisCAFile, errors.Unwrap(err)))
		}
	}
	return p
}

// skipsVerify reports a REDIS_URL asking go-redis not to verify a
// rediss:// server's certificate: skip_verify, whatever its value or
// case (go-redis rejects what it does not know, so a misspelt one fails
// there).
func skipsVerify(u *url.URL) bool {
	for name := range u.Query() {
		if strings.EqualFold(name, "skip_verify") {
			return true
		}
	}
	return false
}
