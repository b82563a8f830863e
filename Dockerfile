# syntax=docker/dockerfile:1
# wxa-sidecar: a static binary on distroless, run as a numeric non-root user.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=v1.0.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/you/wxa-sidecar:v1.0.0 .

# The compiler runs on the build machine's own platform and cross-compiles
# (pure Go, no cgo) for the target: no emulation, however many platforms.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Modules first, so a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH CGO_ENABLED=0 \
    go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/wxa-sidecar .

FROM gcr.io/distroless/static-debian12:nonroot
# A stage sees only the ARGs it declares: these two again, for the labels.
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wxa-sidecar" \
      org.opencontainers.image.description="WeChat mini-program API sidecar: managed access_token, cached codes, rate limits, metrics" \
      org.opencontainers.image.source="https://github.com/wxa-sidecar/wxa-sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/wxa-sidecar /wxa-sidecar
# Numeric, because the kubelet cannot verify runAsNonRoot for a named user.
USER 65532:65532
# 8080 API (127.0.0.1 by default: only the pod's own containers call it;
# `docker run -p 8080:8080` needs LISTEN_ADDR=:8080),
# 9102 admin, 8081 optional QRCODE_ADDR.
EXPOSE 8080 9102 8081
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the admin port.
ENTRYPOINT ["/wxa-sidecar"]
