#!/usr/bin/env bash
# Cache-hit throughput, side by side in one run: the sidecar (GOMAXPROCS=1,
# pinned to core 0) against a bare net/http server answering the same bytes
# from memory (also GOMAXPROCS=1 on core 0), wrk -t1 -c32 pinned to core 1,
# rounds interleaved and their order rotated. Prints one line per round and
# the medians.
#
#   bash bench/throughput.sh [rounds] [seconds]
#
# Optional columns, measured in the same rounds:
#   nginx   when nginx is installed (NGINX=0 leaves it out): proxy_cache keyed
#           on the POST body, in front of the sidecar, one worker on core 0.
#   bare-hdr  with LIKE_SIDECAR=1: bench/bare -like-sidecar, the same bytes
#           with a sidecar hit's headers and server timeouts: what the HTTP
#           alone costs, apart from the sidecar's own work.
#   bare2   with CALIBRATE=1: a second bare server, the same binary. Its ratio
#           to bare is the method's own noise: what "1.0" looks like here.
#
# Besides req/s, each round reports every server's CPU time per request (user
# + system, from /proc/PID/stat) and the steal time of core 0 (time the host
# gave to someone else), which is most of the noise on a shared VM.
#
# Needs wrk, bc and taskset (Debian: wrk, bc, util-linux). Talks only to
# loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-5}
work=$(mktemp -d)
cleanup() {
  [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  kill $(jobs -p) 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/wxa-sidecar" .
go build -o "$work/bare" ./bench/bare

api=127.0.0.1:18080 admin=127.0.0.1:18102 bare=127.0.0.1:18090 bare2=127.0.0.1:18091 bare3=127.0.0.1:18092 nginx=127.0.0.1:18070
# A server already listening on one of these would be measured in ours' place.
for addr in $api $admin $bare $bare2 $bare3 $nginx; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
    echo "$addr is taken: stop what listens there first" >&2
    exit 1
  fi
done
# This width makes the fake WeChat's image about 50 KB.
body='{"scene":"bench-50k","page":"pages/index/index","width":345}'

GOMAXPROCS=1 LISTEN_ADDR=$api ADMIN_ADDR=$admin LOG_LEVEL=warn \
  taskset -c 0 "$work/wxa-sidecar" --demo >/dev/null 2>"$work/sidecar.log" &
sidecar_pid=$!
for _ in $(seq 50); do curl -fs "http://$admin/readyz" >/dev/null && break; sleep 0.1; done
# A sidecar that failed to start: its log says why.
kill -0 "$sidecar_pid" 2>/dev/null || { echo "the sidecar did not start:" >&2; cat "$work/sidecar.log" >&2; exit 1; }

# Warm the cache, and keep the exact bytes for the bare server.
curl -fsS -o "$work/image" -X POST "http://$api/wxa/getwxacodeunlimit" -d "$body"
status=$(curl -fsS -D - -o /dev/null -X POST "http://$api/wxa/getwxacodeunlimit" -d "$body" | tr -d '\r' | grep -i '^cache-status:')
echo "image: $(stat -c %s "$work/image") bytes; second request: $status"

names=(sidecar bare) urls=("http://$api/wxa/getwxacodeunlimit" "http://$bare/")
GOMAXPROCS=1 taskset -c 0 "$work/bare" -addr $bare -file "$work/image" &
pids=("$sidecar_pid" "$!")

if [[ ${LIKE_SIDECAR:-0} == 1 ]]; then
  GOMAXPROCS=1 taskset -c 0 "$work/bare" -addr $bare3 -like-sidecar -file "$work/image" &
  names+=(bare-hdr) urls+=("http://$bare3/") pids+=("$!")
fi

if [[ ${CALIBRATE:-0} == 1 ]]; then
  GOMAXPROCS=1 taskset -c 0 "$work/bare" -addr $bare2 -file "$work/image" &
  names+=(bare2) urls+=("http://$bare2/") pids+=("$!")
fi

if [[ ${NGINX:-1} != 0 ]] && command -v nginx >/dev/null; then
  mkdir -p "$work/nginx/cache"
  cat >"$work/nginx.conf" <<NGINX
$( ((EUID == 0)) && echo 'user root;')
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=codes:10m max_size=1g inactive=24h;
  server {
    listen $nginx;
    # The body must stay in memory for \$request_body to be part of the key.
    client_body_buffer_size 16k;
    location / {
      proxy_pass http://$api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache codes;
      proxy_cache_methods POST;
      proxy_cache_key "\$request_uri|\$request_body";
      proxy_cache_valid 200 24h;
      proxy_cache_lock on;
    }
  }
}
NGINX
  taskset -c 0 nginx -e stderr -p "$work/nginx" -c "$work/nginx.conf" 2>"$work/nginx/stderr.log" &
  for _ in $(seq 50); do [[ -s $work/nginx.pid ]] && break; sleep 0.1; done
  curl -fsS -o /dev/null -X POST "http://$nginx/wxa/getwxacodeunlimit" -d "$body"
  if curl -fsS -o "$work/nginx-image" -X POST "http://$nginx/wxa/getwxacodeunlimit" -d "$body" &&
    cmp -s "$work/image" "$work/nginx-image"; then
    # The worker does the serving; the master only waits.
    names+=(nginx) urls+=("http://$nginx/wxa/getwxacodeunlimit") pids+=("$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)")
  else
    echo "nginx: left out, it did not serve the image:" >&2
    cat "$work/nginx/stderr.log" "$work/nginx/error.log" >&2 || true
  fi
fi
sleep 0.5

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body   = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
steal_ticks() { awk '$1 == "cpu0" {print $9}' /proc/stat; }
busy_ticks() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# load I: one wrk run against target I; sets rps[I] and cpu_us[I].
declare -A rps cpu_us all_rps all_cpu all_ratio
load() {
  local i=$1 before after out n
  before=$(cpu_ticks "${pids[$i]}")
  out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" -s "$work/post.lua" "${urls[$i]}")
  after=$(cpu_ticks "${pids[$i]}")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps[$i]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  cpu_us[$i]=$(echo "($after - $before) * 1000000 / $hz / $n" | bc -l)
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

n=${#names[@]} steals=()
for r in $(seq "$rounds"); do
  s0=$(steal_ticks) t0=$(busy_ticks)
  # Rotate which goes first, so none always meets a warmer or quieter machine.
  for k in $(seq 0 $((n - 1))); do load $(((k + r) % n)); done
  steal=$(echo "100 * ($(steal_ticks) - $s0) / ($(busy_ticks) - $t0)" | bc -l)
  steals+=("$steal")
  line=$(printf 'round %d (steal %.0f%%):' "$r" "$steal")
  for i in $(seq 0 $((n - 1))); do
    ratio=$(echo "${rps[$i]} / ${rps[1]}" | bc -l)
    all_rps[$i]+=" ${rps[$i]}" all_cpu[$i]+=" ${cpu_us[$i]}"
    ((i == 1)) || all_ratio[$i]+=" $ratio"
    line+=$(printf ' %s %s req/s %.1f us/req' "${names[$i]}" "${rps[$i]}" "${cpu_us[$i]}")
    ((i == 1)) || line+=$(printf ' (%.3f)' "$ratio")
    ((i == n - 1)) || line+=','
  done
  echo "$line"
done

printf 'median of %d rounds of %ss (core 0 steal median %.0f%%):\n' "$rounds" "$secs" "$(median "${steals[@]}")"
for i in $(seq 0 $((n - 1))); do
  line=$(printf '  %-8s %8.0f req/s %6.1f us/req' "${names[$i]}" "$(median ${all_rps[$i]})" "$(median ${all_cpu[$i]})")
  if ((i != 1)); then
    line+=$(printf '  req/s ratio to bare %.3f' "$(median ${all_ratio[$i]})")
  fi
  echo "$line"
done
