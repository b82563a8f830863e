#!/usr/bin/env bash
# User-space instructions per cache hit, counted by valgrind's callgrind, for
# the sidecar (demo mode), bench/bare and bench/bare -like-sidecar: each runs
# under callgrind with counting off, is warmed up, then counts while wrk -c1
# sends the same POST for a fixed time.
#
#   bash bench/instructions.sh [seconds]
#
# req/s on a shared VM moves with whatever else the host runs; an instruction
# count does not (the same binary and load give the same figure), so this
# tells what the sidecar's own work costs when throughput rounds cannot. It
# leaves out the kernel, which does the same work for all three: two reads
# and two writes per request (see BENCHMARKS.md).
#
# Needs valgrind and wrk (Debian: valgrind, wrk). Talks only to loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

go build -o "$work/wxa-sidecar" .
go build -o "$work/bare" ./bench/bare

api=127.0.0.1:18080 admin=127.0.0.1:18102 bare=127.0.0.1:18090 bare3=127.0.0.1:18092
# A server already listening on one of these would be measured in ours' place.
for addr in $api $admin $bare $bare3; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
    echo "$addr is taken: stop what listens there first" >&2
    exit 1
  fi
done
body='{"scene":"bench-50k","page":"pages/index/index","width":345}'
cg() { # name, command...
  local name=$1
  shift
  # Go preempts long-running goroutines with signals, which callgrind 3.19
  # can trip an assertion over (seen while the fake draws the first image).
  GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.$name" \
    "$@" >/dev/null 2>"$work/$name.log" &
  pids[$name]=$!
}
declare -A pids

LISTEN_ADDR=$api ADMIN_ADDR=$admin LOG_LEVEL=warn cg sidecar "$work/wxa-sidecar" --demo
for _ in $(seq 300); do curl -fs "http://$admin/readyz" >/dev/null && break; sleep 0.1; done
# A sidecar that failed to start: its log says why.
kill -0 "${pids[sidecar]}" 2>/dev/null || { echo "the sidecar did not start:" >&2; cat "$work/sidecar.log" >&2; exit 1; }
# The miss makes the fake draw the image, slowly under valgrind.
curl -fsS -m 120 -o "$work/image" -X POST "http://$api/wxa/getwxacodeunlimit" -d "$body"
cg bare "$work/bare" -addr $bare -file "$work/image"
cg bare-hdr "$work/bare" -addr $bare3 -like-sidecar -file "$work/image"
for url in "http://$bare/" "http://$bare3/"; do
  for _ in $(seq 300); do curl -fs -o /dev/null "$url" && break; sleep 0.1; done
done

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body   = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

declare -A per_request
for name in sidecar bare bare-hdr; do
  case $name in
  sidecar) url="http://$api/wxa/getwxacodeunlimit" ;;
  bare) url="http://$bare/" ;;
  bare-hdr) url="http://$bare3/" ;;
  esac
  pid=${pids[$name]}
  wrk -t1 -c1 -d2s -s "$work/post.lua" "$url" >/dev/null # warm-up, not counted
  callgrind_control -i on "$pid" >/dev/null 2>&1
  n=$(wrk -t1 -c1 -d"${secs}s" -s "$work/post.lua" "$url" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  callgrind_control -i off "$pid" >/dev/null 2>&1
  # callgrind writes the dump when the process next runs; nudge it.
  for _ in $(seq 100); do
    compgen -G "$work/cg.$name.*" >/dev/null && break
    curl -fs -o /dev/null -X POST "$url" -d "$body" || true
    sleep 0.2
  done
  sleep 1
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.$name".*)
  per_request[$name]=$((ir / n))
  printf '%-9s %7d requests  %8d instructions per request\n' "$name" "$n" "${per_request[$name]}"
done
printf 'sidecar minus bare-hdr: %d instructions per request (the sidecar'"'"'s own work)\n' \
  $((per_request[sidecar] - per_request[bare-hdr]))
