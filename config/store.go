package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// validateStore checks the durable store's variables and reads its key
// files; the errors never carry what the files hold.
func (c *Config) validateStore() []error {
	var p []error
	if c.StoreTimeout <= 0 {
		p = append(p, fmt.Errorf("STORE_TIMEOUT: %s must be above 0", c.StoreTimeout))
	}
	if c.StoreTTL < 0 {
		p = append(p, fmt.Errorf("STORE_TTL: %s must not be negative", c.StoreTTL))
	}
	if c.StoreMaxBytes <= 0 {
		p = append(p, fmt.Errorf("STORE_MAX_BYTES: %d must be above 0", c.StoreMaxBytes))
	}
	if c.StoreURL == "" {
		if c.StoreEndpoint != "" || c.StoreAccessKeyFile != "" || c.StoreSecretKeyFile != "" || c.StoreKeyFile != "" {
			p = append(p, errors.New("STORE_ENDPOINT, STORE_ACCESS_KEY_FILE, STORE_SECRET_KEY_FILE, STORE_KEY_FILE: set STORE_URL too, or none"))
		}
		return p
	}
	u, err := url.Parse(c.StoreURL)
	switch {
	case err != nil:
		p = append(p, errors.New("STORE_URL: does not parse; want file:///DIR or s3://BUCKET/PREFIX"))
	case u.Scheme == "file":
		if (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") || u.RawQuery != "" {
			p = append(p, fmt.Errorf("STORE_URL: %q: want file:///ABSOLUTE/DIR (three slashes)", c.StoreURL))
		}
		if c.StoreEndpoint != "" || c.StoreAccessKeyFile != "" || c.StoreSecretKeyFile != "" {
			p = append(p, errors.New("STORE_ENDPOINT, STORE_ACCESS_KEY_FILE, STORE_SECRET_KEY_FILE: for an s3:// STORE_URL only"))
		}
	case u.Scheme == "s3":
		if u.Host == "" || u.User != nil || u.RawQuery != "" {
			// Never echo it: someone may have put credentials in it.
			p = append(p, errors.New("STORE_URL: want s3://BUCKET/PREFIX, credentials in STORE_ACCESS_KEY_FILE and STORE_SECRET_KEY_FILE"))
		}
		if c.StoreEndpoint != "" {
			e, err := url.Parse(c.StoreEndpoint)
			if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || strings.Trim(e.Path, "/") != "" || e.User != nil {
				p = append(p, errors.New("STORE_ENDPOINT: want http(s)://HOST[:PORT], e.g. https://cos.ap-guangzhou.myqcloud.com"))
			}
		}
	default:
		p = append(p, errors.New("STORE_URL: want file:///DIR or s3://BUCKET/PREFIX"))
	}
	if (c.StoreAccessKeyFile == "") != (c.StoreSecretKeyFile == "") {
		p = append(p, errors.New("STORE_ACCESS_KEY_FILE, STORE_SECRET_KEY_FILE: set both or neither"))
	}
	read := func(name, file string) string {
		if file == "" {
			return ""
		}
		b, err := os.ReadFile(file)
		if err != nil {
			p = append(p, fmt.Errorf("%s: cannot read %s: %w", name, file, errors.Unwrap(err)))
			return ""
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			p = append(p, fmt.Errorf("%s: %s is empty", name, file))
		}
		return v
	}
	c.StoreAccessKey = read("STORE_ACCESS_KEY_FILE", c.StoreAccessKeyFile)
	c.StoreSecretKey = read("STORE_SECRET_KEY_FILE", c.StoreSecretKeyFile)
	if key := read("STORE_KEY_FILE", c.StoreKeyFile); key != "" {
		if len(key) < 32 {
			p = append(p, fmt.Errorf("STORE_KEY_FILE: %s holds %d bytes; want at least 32 (head -c 32 /dev/urandom | base64)", c.StoreKeyFile, len(key)))
		}
		c.StoreKey = []byte(key)
	}
	return p
}
