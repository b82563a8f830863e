package k8s

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// dockerfileProblems parses a Dockerfile (no network, no engine) and
// returns every property of the image that is missing.
func dockerfileProblems(t *testing.T, src string) []string {
	t.Helper()
	ast, err := parser.Parse(strings.NewReader(src))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	stages, _, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		t.Fatalf("instructions: %v", err)
	}
	var problems []string
	if len(stages) < 2 {
		return []string{"want a multi-stage build"}
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.BaseName, "golang:1.26") {
		problems = append(problems, "builder must be golang:1.26, got "+build.BaseName)
	}
	var buildRun string
	for _, cmd := range build.Commands {
		if run, ok := cmd.(*instructions.RunCommand); ok && strings.Contains(strings.Join(run.CmdLine, " "), "go build") {
			buildRun = strings.Join(run.CmdLine, " ")
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version="} {
		if !strings.Contains(buildRun, want) {
			problems = append(problems, "the go build RUN lacks "+want)
		}
	}
	if final.BaseName != "gcr.io/distroless/static-debian12:nonroot" {
		problems = append(problems, "final stage must be gcr.io/distroless/static-debian12:nonroot, got "+final.BaseName)
	}
	var user string
	var entrypoint *instructions.EntrypointCommand
	var exposed []string
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entrypoint = c
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.HealthCheckCommand:
			problems = append(problems, "no HEALTHCHECK: Kubernetes probes the admin port")
		}
	}
	if user != "65532:65532" {
		problems = append(problems, "USER must be numeric 65532:65532, got "+user)
	}
	if entrypoint == nil || entrypoint.PrependShell {
		problems = append(problems, "ENTRYPOINT must be in exec form")
	}
	for _, port := range []string{"8080", "9102"} {
		if !slices.Contains(exposed, port) {
			problems = append(problems, "EXPOSE lacks "+port)
		}
	}
	return problems
}

func TestDockerfile(t *testing.T) {
	src, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dockerfileProblems(t, string(src)) {
		t.Error(p)
	}
}

// TestDockerfileChecksCanFail proves each check catches its mistake.
func TestDockerfileChecksCanFail(t *testing.T) {
	good, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	breakages := map[string][2]string{
		"named user":      {"USER 65532:65532", "USER nonroot"},
		"shell form":      {`ENTRYPOINT ["/wxa-sidecar"]`, "ENTRYPOINT /wxa-sidecar"},
		"cgo":             {"CGO_ENABLED=0 ", ""},
		"healthcheck":     {`ENTRYPOINT ["/wxa-sidecar"]`, "HEALTHCHECK CMD [\"/wxa-sidecar\",\"--version\"]\nENTRYPOINT [\"/wxa-sidecar\"]"},
		"no admin port":   {"EXPOSE 8080 9102 8081", "EXPOSE 8080"},
		"other base":      {"gcr.io/distroless/static-debian12:nonroot", "debian:12"},
		"no version flag": {"-X main.version=${VERSION}", ""},
	}
	for name, b := range breakages {
		bad := strings.Replace(string(good), b[0], b[1], 1)
		if bad == string(good) {
			t.Fatalf("%s: the Dockerfile no longer contains %q", name, b[0])
		}
		if len(dockerfileProblems(t, bad)) == 0 {
			t.Errorf("%s: the checks passed a broken Dockerfile", name)
		}
	}
}
