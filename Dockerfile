# syntax=docker/dockerfile:1
# wxa-sidecar: a static binary on distroless, run as a numeric non-root user.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/wxa-sidecar .

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="wxa-sidecar" \
      org.opencontainers.image.description="WeChat mini-program API sidecar: managed access_token, cached codes, rate limits, metrics" \
      org.opencontainers.image.source="https://github.com/wxa-sidecar/wxa-sidecar"
COPY --from=build /out/wxa-sidecar /wxa-sidecar
# Numeric, because the kubelet cannot verify runAsNonRoot for a named user.
USER 65532:65532
# 8080 API (bind it to 127.0.0.1 in the pod), 9102 admin, 8081 optional QRCODE_ADDR.
EXPOSE 8080 9102 8081
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz on the admin port.
ENTRYPOINT ["/wxa-sidecar"]
