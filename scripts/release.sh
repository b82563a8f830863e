#!/usr/bin/env bash
# release.sh builds what a release ships into dist/: one static binary per
# platform (linux and darwin × amd64 and arm64, or the PLATFORMS given),
# each as wxa-sidecar_<version>_<os>_<arch>.tar.gz with README, docs/, LICENSE,
# CHANGELOG and BENCHMARKS, and SHA256SUMS over the archives. The version is
# `git describe --tags --always --dirty` unless VERSION is set; the
# binaries print it with --version and report it in wxa_sidecar_build_info.
#
#   make release                                  # every platform
#   PLATFORMS=linux/amd64 scripts/release.sh      # one (what CI checks)
set -euo pipefail
cd "$(dirname "$0")/.."

version=${VERSION:-$(git describe --tags --always --dirty)}
platforms=${PLATFORMS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64"}
dist=${DIST:-dist}

rm -rf "$dist"
mkdir -p "$dist"
for platform in $platforms; do
  os=${platform%/*}
  arch=${platform#*/}
  name="wxa-sidecar_${version}_${os}_${arch}"
  stage="$dist/$name"
  mkdir -p "$stage"
  GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X main.version=${version}" -o "$stage/wxa-sidecar" .
  cp -R README.md LICENSE CHANGELOG.md BENCHMARKS.md docs "$stage/"
  # Reproducible archives: fixed order, owner and times.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' \
    -C "$dist" -czf "$dist/$name.tar.gz" "$name"
  rm -rf "$stage"
  echo "built $dist/$name.tar.gz"
done
(cd "$dist" && sha256sum -- *.tar.gz > SHA256SUMS)
echo "version $version; checksums in $dist/SHA256SUMS"
