package k8s

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// deploy/compose: checked without Docker (CI has none): decoded strictly
// into the part of the Compose specification it uses, so a misspelt key
// fails, and held to what deploy/compose/README.md promises.
const composeDir = "../deploy/compose"

type composeService struct {
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build,omitempty"`
	Image       string            `json:"image,omitempty"`
	User        string            `json:"user,omitempty"`
	Entrypoint  []string          `json:"entrypoint,omitempty"`
	Command     []string          `json:"command,omitempty"`
	EnvFile     string            `json:"env_file,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	Secrets     []string          `json:"secrets,omitempty"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on,omitempty"`
	Healthcheck *struct {
		Test     []string `json:"test"`
		Interval string   `json:"interval"`
		Timeout  string   `json:"timeout"`
		Retries  int      `json:"retries"`
	} `json:"healthcheck,omitempty"`
	Ports       []string `json:"ports,omitempty"`
	Restart     string   `json:"restart,omitempty"`
	ReadOnly    bool     `json:"read_only,omitempty"`
	CapDrop     []string `json:"cap_drop,omitempty"`
	SecurityOpt []string `json:"security_opt,omitempty"`
}

type composeFile struct {
	Name     string                    `json:"name,omitempty"`
	XSidecar *composeService           `json:"x-sidecar,omitempty"`
	Services map[string]composeService `json:"services"`
	Secrets  map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
}

func readCompose(t *testing.T, name string) composeFile {
	t.Helper()
	var c composeFile
	strict(t, readFile(t, filepath.Join(composeDir, name)), &c)
	return c
}

// withOverride is what `docker compose -f compose.yaml -f override up`
// runs: the override's entrypoint and env_file replace, its environment
// and secrets are added.
func withOverride(base, over composeFile) composeFile {
	out := composeFile{Name: base.Name, Services: map[string]composeService{}, Secrets: base.Secrets}
	for name, s := range base.Services {
		o, ok := over.Services[name]
		if ok {
			if o.Entrypoint != nil {
				s.Entrypoint = o.Entrypoint
			}
			if o.EnvFile != "" {
				s.EnvFile = o.EnvFile
			}
			env := map[string]string{}
			for k, v := range s.Environment {
				env[k] = v
			}
			for k, v := range o.Environment {
				env[k] = v
			}
			s.Environment = env
			s.Secrets = append(slices.Clone(s.Secrets), o.Secrets...)
		}
		out.Services[name] = s
	}
	out.Secrets = map[string]struct {
		File string `json:"file"`
	}{}
	for k, v := range base.Secrets {
		out.Secrets[k] = v
	}
	for k, v := range over.Secrets {
		out.Secrets[k] = v
	}
	return out
}

// envFileNames lists the variables of an env file, commented-out examples
// included.
func envFileNames(t *testing.T, name string) []string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := regexp.MustCompile(`^#?\s*([A-Z][A-Z0-9_]*)=`)
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			names = append(names, m[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// sidecars are the services that run the sidecar's image.
func sidecars(c composeFile) map[string]composeService {
	out := map[string]composeService{}
	for name, s := range c.Services {
		if s.Build != nil || s.Image == "wxa-sidecar:compose" {
			out[name] = s
		}
	}
	return out
}

// composeProblems lists how a compose project (after any override) falls
// short: demo says whether it should run the built-in fake.
func composeProblems(t *testing.T, c composeFile, demo bool) []string {
	t.Helper()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	side := sidecars(c)
	if len(side) != 2 {
		bad("%d sidecar services, want two replicas", len(side))
	}
	redis, ok := c.Services["redis"]
	if !ok {
		bad("no redis service")
	}
	// Redis's password comes from a secret file, the same the sidecars read.
	var redisSecret string
	for _, s := range redis.Secrets {
		if c.Secrets[s].File != "" {
			redisSecret = s
		}
	}
	if redisSecret == "" || !strings.Contains(strings.Join(redis.Command, " "), "requirepass $$(cat /run/secrets/"+redisSecret+")") {
		bad("redis does not take requirepass from a secret file: %v", redis.Command)
	}
	if redis.Healthcheck == nil || !strings.Contains(strings.Join(redis.Healthcheck.Test, " "), "/run/secrets/"+redisSecret) {
		bad("redis's healthcheck does not authenticate with the secret")
	}
	hostPorts := map[string]string{}
	for name, s := range side {
		env := s.Environment
		var names []string
		for k := range env {
			names = append(names, k)
		}
		if s.EnvFile != "" {
			names = append(names, envFileNames(t, filepath.Join(composeDir, s.EnvFile+".example"))...)
		}
		if u := unknownVariables(t, names); len(u) > 0 {
			bad("%s sets variables the sidecar does not read: %v", name, u)
		}
		if s.Build == nil || filepath.Clean(filepath.Join(composeDir, s.Build.Context)) != ".." || s.Build.Dockerfile != "Dockerfile" {
			bad("%s is not built from the repository's Dockerfile: %+v", name, s.Build)
		} else if _, err := os.Stat(filepath.Join(composeDir, s.Build.Context, s.Build.Dockerfile)); err != nil {
			bad("%s: %v", name, err)
		}
		if env["LISTEN_ADDR"] != ":8080" {
			bad("%s: LISTEN_ADDR %q, want :8080 (the container's loopback is its own)", name, env["LISTEN_ADDR"])
		}
		u, err := url.Parse(env["REDIS_URL"])
		if err != nil || u.Scheme != "redis" || u.Hostname() != "redis" || u.User != nil {
			bad("%s: REDIS_URL %q must point at the redis service, without a password", name, env["REDIS_URL"])
		}
		if env["REDIS_PASSWORD_FILE"] != "/run/secrets/"+redisSecret || !slices.Contains(s.Secrets, redisSecret) {
			bad("%s: REDIS_PASSWORD_FILE %q is not the secret %s it mounts", name, env["REDIS_PASSWORD_FILE"], redisSecret)
		}
		if n, err := strconv.Atoi(env["FLEET_SIZE"]); err != nil || n != len(side) {
			bad("%s: FLEET_SIZE %q, want the %d replicas", name, env["FLEET_SIZE"], len(side))
		}
		if s.DependsOn["redis"].Condition != "service_healthy" {
			bad("%s does not wait for a healthy redis", name)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) {
			bad("%s: read_only %v, cap_drop %v", name, s.ReadOnly, s.CapDrop)
		}
		for _, k := range []string{"WECHAT_APP_SECRET", "REDIS_PASSWORD"} {
			if _, ok := env[k]; ok {
				bad("%s: %s as an environment value (docker inspect shows it)", name, k)
			}
		}
		if demo != slices.Contains(s.Entrypoint, "--demo") || len(s.Entrypoint) == 0 || s.Entrypoint[0] != "/wxa-sidecar" {
			bad("%s: entrypoint %v (demo %v)", name, s.Entrypoint, demo)
		}
		if !demo {
			file := env["WECHAT_APP_SECRET_FILE"]
			secret := strings.TrimPrefix(file, "/run/secrets/")
			if file == secret || !slices.Contains(s.Secrets, secret) || c.Secrets[secret].File == "" {
				bad("%s: WECHAT_APP_SECRET_FILE %q is not a secret file it mounts", name, file)
			}
			if !slices.Contains(envFileNames(t, filepath.Join(composeDir, s.EnvFile+".example")), "WECHAT_APP_ID") {
				bad("%s: the env file's example lacks WECHAT_APP_ID", name)
			}
		}
		// The API port injects a real token: published on loopback only,
		// once per replica.
		var api bool
		for _, p := range s.Ports {
			host, rest, _ := strings.Cut(p, ":")
			hostPort, containerPort, _ := strings.Cut(rest, ":")
			if net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
				bad("%s publishes %s beyond loopback", name, p)
			}
			if other, dup := hostPorts[hostPort]; dup {
				bad("%s and %s both publish host port %s", name, other, hostPort)
			}
			hostPorts[hostPort] = name
			api = api || containerPort == "8080"
		}
		if !api {
			bad("%s does not publish its API port", name)
		}
	}
	return problems
}

func TestComposeDemo(t *testing.T) {
	c := readCompose(t, "compose.yaml")
	if c.XSidecar == nil {
		t.Fatal("compose.yaml has no x-sidecar")
	}
	for _, p := range composeProblems(t, c, true) {
		t.Error(p)
	}
}

func TestComposeWithYourCredentials(t *testing.T) {
	c := withOverride(readCompose(t, "compose.yaml"), readCompose(t, "compose.wechat.yaml"))
	for _, p := range composeProblems(t, c, false) {
		t.Error(p)
	}
}

// The checks have teeth: a misspelt key, a misspelt variable, the API on
// the container's loopback, a password in the environment, a replica
// too many for FLEET_SIZE.
func TestComposeChecksCatchMistakes(t *testing.T) {
	var c composeFile
	if err := yaml.UnmarshalStrict([]byte("services:\n  a:\n    enviroment: {}\n"), &c); err == nil {
		t.Error("a misspelt key was accepted")
	}
	for name, mutate := range map[string]func(s *composeService){
		"a misspelt variable": func(s *composeService) { s.Environment["REDIS_ULR"] = "x" },
		"loopback API":        func(s *composeService) { s.Environment["LISTEN_ADDR"] = "127.0.0.1:8080" },
		"a password":          func(s *composeService) { s.Environment["REDIS_PASSWORD"] = "x" },
		"public port":         func(s *composeService) { s.Ports = []string{"8080:8080"} },
		"demo off":            func(s *composeService) { s.Entrypoint = []string{"/wxa-sidecar"} },
	} {
		c := readCompose(t, "compose.yaml")
		s := c.Services["sidecar-1"]
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = v
		}
		s.Environment = env
		mutate(&s)
		c.Services["sidecar-1"] = s
		if len(composeProblems(t, c, true)) == 0 {
			t.Errorf("compose with %s passed", name)
		}
	}
	c = readCompose(t, "compose.yaml")
	c.Services["sidecar-3"] = c.Services["sidecar-2"]
	if len(composeProblems(t, c, true)) == 0 {
		t.Error("three replicas with FLEET_SIZE 2 passed")
	}
}
