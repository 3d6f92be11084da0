#!/usr/bin/env bash
# HTTP/1.1 keep-alive and pipelining: holdfast versus nginx, one worker each, server on CPU 0,
# wrk on CPU 1, interleaved rep by rep; medians of REPS runs of req/s and of server CPU time per
# request (utime+stime of the server process over the run). Writes bench/results/http.md.
#
#   bash bench/http.sh            # REPS=3 DURATION=10s by default
#   REPS=5 DURATION=15s bash bench/http.sh
#   SCENARIOS="c1000:1000:" REPS=5 bash bench/http.sh
#   ACCESS_LOG=1 bash bench/http.sh   # both servers write an access log to a file
#
# With ACCESS_LOG=1, holdfast runs with log.access=<file> and nginx with `access_log <file>
# buffer=32k flush=50ms` (holdfast batches the same way: 32 KiB or 50 ms); the files are
# emptied after every run so a long benchmark does not fill the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-10s}
HF_PORT=${HF_PORT:-18080}
NG_PORT=${NG_PORT:-18081}
WORK=$(mktemp -d /tmp/holdfast-bench.XXXXXX)
ACCESS_LOG=${ACCESS_LOG:-0}
OUT=bench/results/http.md
[ "$ACCESS_LOG" = 1 ] && OUT=bench/results/http-access-log.md
mkdir -p bench/results

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx)"; exit 1; }
ulimit -n "$(ulimit -Hn)"
cargo build --release -q
HF=target/release/holdfast

sed -e "s#__DIR__#$WORK#g" -e "s#__PORT__#$NG_PORT#g" bench/nginx.conf > "$WORK/nginx.conf"
HF_EXTRA=()
if [ "$ACCESS_LOG" = 1 ]; then
  sed -i "s#access_log off;#access_log $WORK/nginx-access.log combined buffer=32k flush=50ms;#" \
    "$WORK/nginx.conf"
  HF_EXTRA=(--set "log.access=$WORK/holdfast-access.log")
fi
mkdir -p "$WORK/body"

# shellcheck source=bench/lib.sh
source bench/lib.sh

taskset -c 0 "$HF" serve --set server.listen=127.0.0.1:$HF_PORT --set server.tls_listen= \
  --set server.workers=1 --set http.keepalive_requests=1000000 "${HF_EXTRA[@]}" \
  2>"$WORK/holdfast.log" &
HF_PID=$!
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" &
NG_PID=$!
wait_both_up -sf "http://127.0.0.1:$HF_PORT/plaintext" "http://127.0.0.1:$NG_PORT/plaintext"


# run NAME PID PORT CONNS [pipeline depth] -> "reqs_per_s cpu_us_per_req"
run() {
  local pid=$1 port=$2 conns=$3 depth=${4:-}
  local before after out rps reqs
  local args=(-t1 -c"$conns" -d"$DURATION" --latency)
  before=$(cpu_ticks "$pid")
  if [ -n "$depth" ]; then
    out=$(taskset -c 1 wrk "${args[@]}" -s bench/wrk/pipeline.lua "http://127.0.0.1:$port/plaintext" -- "$depth")
  else
    out=$(taskset -c 1 wrk "${args[@]}" "http://127.0.0.1:$port/plaintext")
  fi
  after=$(cpu_ticks "$pid")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
    echo "$out" | grep "Non-2xx\|Socket errors" >&2
  fi
  if [ "$ACCESS_LOG" = 1 ]; then
    # Both servers hold the files open with O_APPEND, so emptying them in place is safe.
    wc -l "$WORK/nginx-access.log" "$WORK/holdfast-access.log" | head -2 | tr '\n' ' ' >&2
    : >"$WORK/nginx-access.log"
    : >"$WORK/holdfast-access.log"
  fi
  awk -v r="$rps" -v n="$reqs" -v t="$((after - before))" -v hz="$TICK" \
    'BEGIN { printf "%.0f %.2f\n", r, (n > 0 ? t / hz * 1e6 / n : 0) }'
}


# NAME:CONNECTIONS:PIPELINE_DEPTH; override with e.g. SCENARIOS="c1000:1000:"
read -r -a SCENARIOS <<<"${SCENARIOS:-c100:100: c1000:1000: pipeline16:100:16}"
declare -A RES
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    IFS=: read -r name conns depth <<<"$sc"
    # Alternate which server goes first each rep so neither always gets the warmer machine.
    if [ $((rep % 2)) -eq 1 ]; then order="nginx holdfast"; else order="holdfast nginx"; fi
    for srv in $order; do
      if [ "$srv" = nginx ]; then r=$(run "$NG_WORKER" "$NG_PORT" "$conns" "$depth");
      else r=$(run "$HF_PID" "$HF_PORT" "$conns" "$depth"); fi
      RES[$srv,$name]+="$r"$'\n'
      echo "rep $rep $name $srv: $r req/s, us-cpu/req" >&2
    done
  done
done

{
  logs=""
  [ "$ACCESS_LOG" = 1 ] && logs=", both writing an access log to a file"
  echo "### HTTP/1.1 plaintext, wrk -t1 (CPU 1), server one worker (CPU 0)$logs, $DURATION x $REPS reps, medians"
  echo
  echo "$(machine_line); command: \`SCENARIOS=\"${SCENARIOS[*]}\" REPS=$REPS DURATION=$DURATION ACCESS_LOG=$ACCESS_LOG bash bench/http.sh\`"
  echo
  echo "| scenario | nginx req/s | holdfast req/s | ratio | nginx µs CPU/req | holdfast µs CPU/req | CPU ratio (nginx/holdfast) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for sc in "${SCENARIOS[@]}"; do
    IFS=: read -r name conns depth <<<"$sc"
    table_row "$name" "${RES[nginx,$name]}" "${RES[holdfast,$name]}"
  done
} | tee "$OUT"
