# The project's habits in one place. `make test` is what CI runs; `make
# test-short` is the inner loop (no real processes, no waits; under a
# minute with a warm build cache).
GO ?= go
STATICCHECK_VERSION := v0.8.2
ACTIONLINT_VERSION := v1.7.12
GOBIN ?= $(shell $(GO) env GOPATH)/bin

.PHONY: test test-short lint tools bench fleetbench nested release actionlint

test:
	$(GO) test -race ./...

test-short:
	$(GO) test -short ./...

lint: tools
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

tools:
	@test -x $(GOBIN)/staticcheck || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# The nested modules, in plain module mode (their go.sum must be whole).
nested:
	cd examples && GOFLAGS= $(GO) vet ./... && GOFLAGS= $(GO) test -count=1 ./...
	cd k8s && GOFLAGS= $(GO) vet ./... && GOFLAGS= $(GO) test -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./codes ./proxy ./sidecar ./fleet ./seal

fleetbench:
	$(GO) run -tags fleetbench ./bench/fleet

# dist/: binaries for linux and darwin × amd64 and arm64, SHA256SUMS; the
# version is `git describe --tags --always --dirty` (scripts/release.sh).
release:
	scripts/release.sh

actionlint:
	@test -x $(GOBIN)/actionlint || GOFLAGS= $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)
	$(GOBIN)/actionlint
