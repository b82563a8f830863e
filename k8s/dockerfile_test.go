package k8s

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// testBuildArgs are the --build-arg values (and the platform buildx sets)
// the checks build with, so they can see what reaches the binary and the
// labels.
var testBuildArgs = map[string]string{
	"TARGETOS":   "linux",
	"TARGETARCH": "arm64",
	"VERSION":    "v1.2.3",
	"REVISION":   "0123456789abcdef",
}

// expandAt expands word as the shell of a RUN, or the Dockerfile for a
// LABEL, would at the n-th command of the stage: only the ARGs the stage
// declared before it are set (a stage does not see global or platform
// ARGs it does not declare), to testBuildArgs or their defaults.
func expandAt(t *testing.T, stage instructions.Stage, n int, word string) string {
	t.Helper()
	var env []string
	for _, cmd := range stage.Commands[:n] {
		arg, ok := cmd.(*instructions.ArgCommand)
		if !ok {
			continue
		}
		for _, kv := range arg.Args {
			if v, ok := testBuildArgs[kv.Key]; ok {
				env = append(env, kv.Key+"="+v)
			} else if kv.Value != nil {
				env = append(env, kv.Key+"="+*kv.Value)
			}
		}
	}
	out, _, err := shell.NewLex('\\').ProcessWord(word, shell.EnvsFromSlice(env))
	if err != nil {
		t.Fatalf("expand %q: %v", word, err)
	}
	return out
}

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
	build, final := &stages[0], &stages[len(stages)-1]
	if !strings.HasPrefix(build.BaseName, "golang:1.26") {
		problems = append(problems, "builder must be golang:1.26, got "+build.BaseName)
	}
	// Multi-arch: the compiler runs natively and cross-compiles for the
	// target buildx asks for, instead of running under emulation.
	if build.Platform != "$BUILDPLATFORM" && build.Platform != "${BUILDPLATFORM}" {
		problems = append(problems, "the build stage must be FROM --platform=$BUILDPLATFORM, got "+build.Platform)
	}
	var buildRun string
	for i, cmd := range build.Commands {
		if run, ok := cmd.(*instructions.RunCommand); ok && strings.Contains(strings.Join(run.CmdLine, " "), "go build") {
			buildRun = expandAt(t, *build, i, strings.Join(run.CmdLine, " "))
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=" + testBuildArgs["VERSION"],
		"GOOS=" + testBuildArgs["TARGETOS"], "GOARCH=" + testBuildArgs["TARGETARCH"]} {
		if !strings.Contains(buildRun, want) {
			problems = append(problems, "the go build RUN, with the build args, lacks "+want+": "+buildRun)
		}
	}
	if final.BaseName != "gcr.io/distroless/static-debian12:nonroot" {
		problems = append(problems, "final stage must be gcr.io/distroless/static-debian12:nonroot, got "+final.BaseName)
	}
	var user string
	var entrypoint *instructions.EntrypointCommand
	var exposed []string
	labels := map[string]string{}
	for i, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				labels[kv.Key] = expandAt(t, *final, i, kv.Value)
			}
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
	// OCI labels from the build args: which release, which commit.
	for label, arg := range map[string]string{"org.opencontainers.image.version": "VERSION", "org.opencontainers.image.revision": "REVISION"} {
		if got := labels[label]; got != testBuildArgs[arg] {
			problems = append(problems, fmt.Sprintf("LABEL %s is %q with --build-arg %s=%s: it must be $%s, declared by an ARG in the final stage",
				label, got, arg, testBuildArgs[arg], arg))
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
		"named user":                      {"USER 65532:65532", "USER nonroot"},
		"shell form":                      {`ENTRYPOINT ["/wxa-sidecar"]`, "ENTRYPOINT /wxa-sidecar"},
		"cgo":                             {"CGO_ENABLED=0 ", ""},
		"healthcheck":                     {`ENTRYPOINT ["/wxa-sidecar"]`, "HEALTHCHECK CMD [\"/wxa-sidecar\",\"--version\"]\nENTRYPOINT [\"/wxa-sidecar\"]"},
		"no admin port":                   {"EXPOSE 8080 9102 8081", "EXPOSE 8080"},
		"other base":                      {"gcr.io/distroless/static-debian12:nonroot", "debian:12"},
		"no version flag":                 {"-X main.version=${VERSION}", ""},
		"emulated build":                  {"FROM --platform=$BUILDPLATFORM golang", "FROM golang"},
		"no target arch":                  {"ARG TARGETOS TARGETARCH", "ARG TARGETOS"},
		"host GOARCH":                     {"GOARCH=$TARGETARCH ", ""},
		"host GOOS":                       {"GOOS=$TARGETOS ", ""},
		"label lacks ARG":                 {"ARG REVISION=unknown\n", ""},
		"version in the build stage only": {"ARG VERSION=dev\nARG REVISION", "ARG REVISION"},
		"fixed version label":             {`org.opencontainers.image.version="${VERSION}"`, `org.opencontainers.image.version="dev"`},
		"no revision label":               {"org.opencontainers.image.revision=", "org.opencontainers.image.commit="},
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
