package config

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
)

// resolveApps fills Apps from single-app or multi-app variables.
func (c *Config) resolveApps() []error {
	if c.AppsFile != "" {
		if c.AppID != "" || c.AppSecret != "" || c.AppSecretFile != "" {
			return []error{errors.New("WECHAT_APPS_FILE: set either it or WECHAT_APP_ID with its secret, not both")}
		}
		apps, errs := readAppsFile(c.AppsFile)
		c.Apps = apps
		return errs
	}
	if c.AppID == "" {
		return []error{errors.New("WECHAT_APP_ID: required (or WECHAT_APPS_FILE for several apps)")}
	}
	switch {
	case c.AppSecret != "" && c.AppSecretFile != "":
		return []error{errors.New("WECHAT_APP_SECRET_FILE: set either it or WECHAT_APP_SECRET, not both")}
	case c.AppSecretFile != "":
		b, err := os.ReadFile(c.AppSecretFile)
		if err != nil {
			return []error{fmt.Errorf("WECHAT_APP_SECRET_FILE: cannot read %s: %w", c.AppSecretFile, errors.Unwrap(err))}
		}
		c.AppSecret = strings.TrimSpace(string(b))
		if c.AppSecret == "" {
			return []error{fmt.Errorf("WECHAT_APP_SECRET_FILE: %s is empty", c.AppSecretFile)}
		}
	case c.AppSecret == "":
		return []error{errors.New("WECHAT_APP_SECRET: required, or WECHAT_APP_SECRET_FILE naming a file that holds it")}
	}
	c.Apps = []App{{ID: c.AppID, Secret: c.AppSecret}}
	return nil
}

// readAppsFile reads `appid:secret` lines; errors name the line, never
// the secret.
func readAppsFile(name string) ([]App, []error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, []error{fmt.Errorf("WECHAT_APPS_FILE: cannot read %s: %w", name, errors.Unwrap(err))}
	}
	defer f.Close()
	var apps []App
	var problems []error
	seen := map[string]bool{}
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, secret, ok := strings.Cut(line, ":")
		id, secret = strings.TrimSpace(id), strings.TrimSpace(secret)
		switch {
		case !ok || id == "" || secret == "":
			problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s:%d: want appid:secret", name, n))
		case seen[id]:
			problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s:%d: app %s listed twice", name, n, id))
		default:
			seen[id] = true
			apps = append(apps, App{ID: id, Secret: secret})
		}
	}
	if err := s.Err(); err != nil {
		problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s: %w", name, err))
	}
	if len(apps) == 0 && len(problems) == 0 {
		problems = append(problems, fmt.Errorf("WECHAT_APPS_FILE: %s lists no app", name))
	}
	return apps, problems
}
