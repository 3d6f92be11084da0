#!/usr/bin/env bash
# Channel fan-out: holdfast (Pusher channels, CHANNELS.md) versus nginx + nchan
# (bench/nginx-nchan.conf), one server core each (CPU 0), wsload on CPU 1: SUBS subscribers,
# then wsload publishes SIZE-byte events and counts every delivery (lost, duplicated, out of
# order; latency per delivery and from publish to the last subscriber).
# TRANSPORT=ws (the default): WebSocket subscribers on both (holdfast's /app/{key}, nchan's
# /sub/CH upgrade); writes bench/results/fanout.md. TRANSPORT=sse: Server-Sent Events
# subscribers on both (holdfast's /app/{key}/events, nchan's EventSource at /sub/CH);
# writes bench/results/fanout-sse.md. Either: medians of REPS, ratios holdfast/nchan, then
# every run.
#
# Scenarios:  one      SUBS subscribers on 1 channel
#             hundred  SUBS subscribers spread over 100 channels
# Per rep and scenario, the servers take turns (the order rotates with the rep):
#   latency    publish at LAT_RATE_* for DURATION s: a load well below either server's
#              saturation; delivery latency, publish-to-last-subscriber, server CPU per
#              delivery, server memory per idle subscriber
#   saturation the rates SAT_RATES_* in turn for SAT_DURATION s each, one server then the
#              other at each rate, until anything is lost, duplicated, reordered or refused
#              (every rate otherwise: on this shared host one noisy step must not end a
#              ladder); its figure is the best clean step's deliveries/s, and the report says
#              at which rate that was and whether the next steps grew no further
# QUOTA=0.6 caps each server at that fraction of its core during the saturation ladder (a CFS
# quota, bench/lib.sh cap_cpu; root; latency runs stay uncapped): on two cores one wsload shard reading every delivery is near its own ceiling when an
# uncapped server saturates, so the saturation ladder would measure the client; capped below
# what wsload can read, the server is the ceiling and its deliveries/s are its own. The
# report's command line says when a quota was on.
# This host is shared: before each run the script waits (at most QUIET_WAIT s) until the
# whole machine was less than QUIET_PCT % busy over a second, and records what it saw.
# Every run gets a freshly started server, so the memory readings start from the same place.
# wsload reads the server process itself (--server-pid: the nginx worker for nchan) before
# the subscribers connect, once all have subscribed (publishing starts then) and once the
# deliveries have settled: memory per idle subscriber = RSS growth / SUBS, CPU per delivery =
# utime+stime over the publishing window / deliveries.
#
#   bash bench/fanout.sh                              # REPS=3
#   REPS=1 SCENARIOS=one SAT_RATES_ONE="10 20" bash bench/fanout.sh
#   TRANSPORT=sse bash bench/fanout.sh                # the same over Server-Sent Events
#   QUOTA=0.6 SAT_RATES_ONE="4 6 8 10 12 16" SAT_RATES_HUNDRED="400 600 800 1000 1200 1600" bash bench/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
SUBS=${SUBS:-10000}
SIZE=${SIZE:-64}
SCENARIOS=${SCENARIOS:-"one hundred"}
DURATION=${DURATION:-8}
SAT_DURATION=${SAT_DURATION:-5}
LAT_RATE_ONE=${LAT_RATE_ONE:-5}          # events/s: x SUBS deliveries/s
LAT_RATE_HUNDRED=${LAT_RATE_HUNDRED:-500} # events/s: x SUBS/100 deliveries/s
SAT_RATES_ONE=${SAT_RATES_ONE:-"8 12 16 24 32"}
SAT_RATES_HUNDRED=${SAT_RATES_HUNDRED:-"800 1200 1600 2400 3200"}
PUBLISHERS=${PUBLISHERS:-16}              # publisher connections (at most one per channel)
QUOTA=${QUOTA:-}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-120}
HF_PORT=${HF_PORT:-18380}
NG_PORT=${NG_PORT:-18381}
TRANSPORT=${TRANSPORT:-ws}
case $TRANSPORT in
  ws) OUT=bench/results/fanout.md; SCHEME=ws; SSE_FLAG=(); SUBSCRIBERS="WebSocket subscribers" ;;
  sse) OUT=bench/results/fanout-sse.md; SCHEME=http; SSE_FLAG=(--sse)
       SUBSCRIBERS="Server-Sent Events subscribers" ;;
  *) echo "TRANSPORT=$TRANSPORT: ws or sse"; exit 1 ;;
esac
WORK=$(mktemp -d /tmp/holdfast-fanout-bench.XXXXXX)
mkdir -p bench/results

[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] ||
  { echo "nchan is not installed (apt-get install nginx-light libnginx-mod-nchan)"; exit 1; }
# 10,000 subscribers: one wsload shard and one server each hold them all.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((SUBS + 1000)) ] || { echo "ulimit -n $(ulimit -n) is below SUBS + 1000"; exit 1; }
for kv in net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535; do
  sysctl -qw "$kv" 2>/dev/null || true
done

cargo build --release -q -p holdfast -p wsload
HF=target/release/holdfast
WSLOAD=target/release/wsload
sed -e "s#__DIR__#$WORK#g" -e "s#__PORT__#$NG_PORT#g" bench/nginx-nchan.conf > "$WORK/nginx.conf"
mkdir -p "$WORK/body"

source bench/lib.sh
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# One capped cgroup per server, made once; each fresh server joins its own.
declare -A SERVER_CG=()
if [ -n "$QUOTA" ]; then
  for s in holdfast nchan; do cap_cpu "$s" "$QUOTA"; SERVER_CG[$s]=$CG; done
fi

# start SERVER KIND: sets SERVER_PID (what is killed) and MEASURE_PID (what is measured).
start() {
  local url
  case $1 in
    holdfast)
      taskset -c 0 "$HF" serve --set server.listen=127.0.0.1:$HF_PORT --set server.tls_listen= \
        --set server.workers=1 --set websocket.permessage_deflate=false \
        --set http.keepalive_requests=1000000 2>>"$WORK/holdfast.log" &
      url=http://127.0.0.1:$HF_PORT/plaintext ;;
    nchan)
      taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" 2>>"$WORK/nginx.log" &
      url=http://127.0.0.1:$NG_PORT/pub/up ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 50); do curl -so /dev/null "$url" && break; sleep 0.1; done
  MEASURE_PID=$SERVER_PID
  [ "$1" = nchan ] && MEASURE_PID=$(pgrep -P "$SERVER_PID" | head -1)
  if [ -n "$QUOTA" ] && [ "$2" = step ]; then
    # cgroup.procs moves a whole process (all its threads); nginx's worker is a process of
    # its own, forked before it could inherit the group, so it is moved too.
    for p in "$SERVER_PID" "$MEASURE_PID"; do echo "$p" >"${SERVER_CG[$1]}/cgroup.procs"; done
  fi
  return 0
}
stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# The whole host's busy % (all cores) over one second.
host_busy() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  echo "$a $b" | awk '{ busy = $3 - $1; all = busy + $4 - $2; printf "%d", (all > 0 ? 100 * busy / all : 0) }'
}
# Waits until the host is quiet (or QUIET_WAIT s have passed); sets BUSY to the last reading.
wait_quiet() {
  local t0=$SECONDS
  BUSY=$(host_busy)
  while [ "$BUSY" -ge "$QUIET_PCT" ] && [ $((SECONDS - t0)) -lt "$QUIET_WAIT" ]; do
    BUSY=$(host_busy)
  done
}

# run SERVER SCENARIO KIND REP RATE SECONDS: one wsload run against a fresh server; appends
# its figures to runs.tsv and prints them (see bench/fanout_report.py for the columns).
run() {
  local server=$1 scenario=$2 kind=$3 rep=$4 rate=$5 seconds=$6 channels url peer json line
  case $scenario in one) channels=1 ;; hundred) channels=100 ;; esac
  case $server in
    holdfast) url=$SCHEME://127.0.0.1:$HF_PORT/; peer=pusher ;;
    nchan) url=$SCHEME://127.0.0.1:$NG_PORT/; peer=nchan ;;
  esac
  wait_quiet
  start "$server" "$kind"
  json=$(taskset -c 1 timeout 300 "$WSLOAD" subscribe --peer "$peer" "${SSE_FLAG[@]}" --url "$url" -c "$SUBS" \
           --channels "$channels" --size "$SIZE" --publish-rate "$rate" \
           --events $((rate * seconds)) --publishers "$PUBLISHERS" --server-pid "$MEASURE_PID" \
           --json 2>>"$WORK/wsload.log" || true)
  stop
  line=$(python3 bench/fanout_report.py line "$server" "$scenario" "$kind" "$rep" "$rate" "$SUBS" "$json" "$BUSY")
  echo "$line" >>"$WORK/runs.tsv"
  echo "$line" >&2
  LAST=$line
}

# Whether a run was clean (field 12).
clean() { [ "$(echo "$1" | cut -f12)" = 1 ]; }

SERVERS=(holdfast nchan)
for rep in $(seq "$REPS"); do
  order=("${SERVERS[@]:$((rep % 2))}" "${SERVERS[@]:0:$((rep % 2))}")
  for scenario in $SCENARIOS; do
    case $scenario in
      one) lat=$LAT_RATE_ONE; rates=$SAT_RATES_ONE ;;
      hundred) lat=$LAT_RATE_HUNDRED; rates=$SAT_RATES_HUNDRED ;;
      *) echo "unknown scenario $scenario"; exit 1 ;;
    esac
    for s in "${order[@]}"; do run "$s" "$scenario" latency "$rep" "$lat" "$DURATION"; done
    declare -A climbing=()
    for s in "${order[@]}"; do climbing[$s]=1; done
    for r in $rates; do
      for s in "${order[@]}"; do
        [ "${climbing[$s]}" = 1 ] || continue
        run "$s" "$scenario" step "$rep" "$r" "$SAT_DURATION"
        clean "$LAST" || climbing[$s]=0
      done
    done
  done
done

{
  echo "### Channel fan-out, $SUBS $SUBSCRIBERS, $SIZE-byte events: holdfast vs nginx + nchan, one server core (CPU 0${QUOTA:+, capped at $QUOTA of it for the saturation ladder}), wsload on CPU 1, $REPS reps, medians"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(date -u +%Y-%m-%d); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null | sed 's/^[0-9]*://; s/+.*//'); command: \`TRANSPORT=$TRANSPORT ${QUOTA:+QUOTA=$QUOTA }REPS=$REPS DURATION=$DURATION SAT_RATES_ONE=\"$SAT_RATES_ONE\" SAT_RATES_HUNDRED=\"$SAT_RATES_HUNDRED\" bash bench/fanout.sh\` (latency: $LAT_RATE_ONE events/s on 1 channel, $LAT_RATE_HUNDRED events/s over 100 channels, ${DURATION}s; saturation steps ${SAT_DURATION}s: \"$SAT_RATES_ONE\" and \"$SAT_RATES_HUNDRED\" events/s; $PUBLISHERS publisher connections at most; each run waited for the host to be under $QUIET_PCT % busy, at most ${QUIET_WAIT}s)"
  echo
  python3 bench/fanout_report.py table "$WORK/runs.tsv"
} | tee "$OUT"
