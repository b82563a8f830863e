package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStoreDefaultsAreOff(t *testing.T) {
	c, err := Load(base())
	if err != nil {
		t.Fatal(err)
	}
	if c.StoreURL != "" || c.StoreTimeout != 500*time.Millisecond || c.StoreTTL != 0 || c.StoreMaxBytes != 10<<30 {
		t.Errorf("store defaults: url %q timeout %s ttl %s max %d", c.StoreURL, c.StoreTimeout, c.StoreTTL, c.StoreMaxBytes)
	}
}

func TestStoreKeyFilesAreReadAndNeverEchoed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(v), 0o600)
		return p
	}
	access, secret := write("access", "AKID-VALUE\n"), write("secret", "  SECRET-VALUE \n")
	key := write("key", strings.Repeat("k", 44)+"\n")
	c, err := Load(with("STORE_URL", "s3://codes/wxa", "STORE_ENDPOINT", "http://minio:9000",
		"STORE_ACCESS_KEY_FILE", access, "STORE_SECRET_KEY_FILE", secret, "STORE_KEY_FILE", key))
	if err != nil {
		t.Fatal(err)
	}
	if c.StoreAccessKey != "AKID-VALUE" || c.StoreSecretKey != "SECRET-VALUE" || string(c.StoreKey) != strings.Repeat("k", 44) {
		t.Errorf("read %q %q %q", c.StoreAccessKey, c.StoreSecretKey, c.StoreKey)
	}
	short := write("short", "too-short")
	_, err = Load(with("STORE_URL", "file:///var/lib/wxa-sidecar", "STORE_KEY_FILE", short))
	if err == nil || !strings.Contains(err.Error(), "STORE_KEY_FILE") || strings.Contains(err.Error(), "too-short") {
		t.Errorf("a short key: %v", err)
	}
}

func TestStoreProblemsNameTheirVariable(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"STORE_URL", "ftp://x"}, "STORE_URL"},
		{[]string{"STORE_URL", "file://var/lib"}, "STORE_URL"},
		{[]string{"STORE_URL", "file:///var/lib", "STORE_ENDPOINT", "http://minio:9000"}, "STORE_ENDPOINT"},
		{[]string{"STORE_URL", "s3://"}, "STORE_URL"},
		{[]string{"STORE_URL", "s3://AKID:hunter2@bucket"}, "STORE_URL"},
		{[]string{"STORE_URL", "s3://b", "STORE_ENDPOINT", "minio:9000"}, "STORE_ENDPOINT"},
		{[]string{"STORE_URL", "s3://b", "STORE_ACCESS_KEY_FILE", "/x"}, "set both or neither"},
		{[]string{"STORE_URL", "s3://b", "STORE_ACCESS_KEY_FILE", "/nope", "STORE_SECRET_KEY_FILE", "/nope"}, "STORE_SECRET_KEY_FILE: cannot read"},
		{[]string{"STORE_ENDPOINT", "http://minio:9000"}, "set STORE_URL too"},
		{[]string{"STORE_URL", "s3://b", "STORE_TIMEOUT", "0s"}, "STORE_TIMEOUT"},
		{[]string{"STORE_URL", "s3://b", "STORE_TTL", "-1h"}, "STORE_TTL"},
		{[]string{"STORE_URL", "file:///x", "STORE_MAX_BYTES", "0"}, "STORE_MAX_BYTES"},
	} {
		_, err := Load(with(c.env...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.env, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: the error echoes a credential: %v", c.env, err)
		}
	}
}
