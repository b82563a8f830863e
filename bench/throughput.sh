#!/usr/bin/env bash
# Cache-hit throughput, side by side in one run: the sidecar (GOMAXPROCS=1,
# pinned to core 0) against a bare net/http server answering the same bytes
# from memory (also GOMAXPROCS=1 on core 0), wrk -t1 -c32 pinned to core 1,
# rounds interleaved. Prints one line per round and the medians.
#
#   bash bench/throughput.sh [rounds] [seconds]
#
# Needs wrk and taskset (Debian: wrk, util-linux). Talks only to loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

go build -o "$work/wxa-sidecar" .
go build -o "$work/bare" ./bench/bare

api=127.0.0.1:18080 admin=127.0.0.1:18102 bare=127.0.0.1:18090
# This width makes the fake WeChat's image about 50 KB.
body='{"scene":"bench-50k","page":"pages/index/index","width":345}'

GOMAXPROCS=1 LISTEN_ADDR=$api ADMIN_ADDR=$admin LOG_LEVEL=warn \
  taskset -c 0 "$work/wxa-sidecar" --demo >/dev/null 2>"$work/sidecar.log" &
for _ in $(seq 50); do curl -fs "http://$admin/readyz" >/dev/null && break; sleep 0.1; done

# Warm the cache, and keep the exact bytes for the bare server.
curl -fsS -o "$work/image" -X POST "http://$api/wxa/getwxacodeunlimit" -d "$body"
status=$(curl -fsS -D - -o /dev/null -X POST "http://$api/wxa/getwxacodeunlimit" -d "$body" | tr -d '\r' | grep -i '^cache-status:')
echo "image: $(stat -c %s "$work/image") bytes; second request: $status"

GOMAXPROCS=1 taskset -c 0 "$work/bare" -addr $bare -file "$work/image" &
sleep 0.5

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body   = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

rps() { taskset -c 1 wrk -t1 -c32 -d"${secs}s" -s "$work/post.lua" "$1" | awk '/^Requests\/sec/ {print $2}'; }

side=() base=() ratios=()
for r in $(seq "$rounds"); do
  # Alternate which goes first, so neither always meets a warmer machine.
  if (( r % 2 )); then
    s=$(rps "http://$api/wxa/getwxacodeunlimit"); b=$(rps "http://$bare/")
  else
    b=$(rps "http://$bare/"); s=$(rps "http://$api/wxa/getwxacodeunlimit")
  fi
  ratio=$(echo "$s / $b" | bc -l)
  side+=("$s") base+=("$b") ratios+=("$ratio")
  printf 'round %d: sidecar %s req/s, bare %s req/s, ratio %.3f\n' "$r" "$s" "$b" "$ratio"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'median: sidecar %s req/s, bare %s req/s, median ratio %.3f\n' \
  "$(median "${side[@]}")" "$(median "${base[@]}")" "$(median "${ratios[@]}")"
