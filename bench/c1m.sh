#!/usr/bin/env bash
# The C1M run: one million WebSocket connections held on this host with server pings, then a
# clean drain. Applies the kernel tuning (runs as root; the old values are restored at the end),
# starts holdfast with as many server processes as the per-process open-file limit needs
# (server.processes), opens the connections with bench/wsload (which shards itself the same
# way), holds them, sends SIGTERM while they are all open, and times the drain. A sampler records
# connections and memory every 5 s; bench/c1m_report.py turns that into the figures and an SVG.
#
#   sudo bash bench/c1m.sh                      # 1,000,000 for 10 minutes, pings every 30 s
#   CONNS=20000 HOLD=60s bash bench/c1m.sh      # a quick rehearsal
#   MODE=channels HOLD=150s bash bench/c1m.sh   # the million as channel subscribers (below)
#
# Knobs: CONNS, HOLD (wsload duration syntax), PING (server ping interval), RAMP (new
# connections per second, all shards together; 4000 keeps this 2-core host, which runs both
# ends, below saturation once the pings of a million connections add up), PER_PROC (expected
# connections per server process; each may take up to the file limit, since SO_REUSEPORT's hash
# does not split exactly evenly), OUT (results directory, default bench/c1m-out).
#
# MODE=channels (issue 15): the connections are Pusher channel subscribers (wsload subscribe),
# each on its own channel bench-{i mod CHANNELS} and on the channel SHARED they all share. Once
# all are subscribed wsload publishes for HOLD, through the HTTP API of the same server: RATE
# small events a second spread over the CHANNELS channels, and a broadcast to SHARED every
# BROADCAST_EVERY (the first one interval in). The server's CPU and memory are framed by
# wsload's "publishing started" and "publishing done" lines; wsload then waits for the
# deliveries to settle, closes its subscribers and reports deliveries, losses and each
# broadcast's time to the last subscriber (wsload.json). No drain is timed in this mode (the
# subscribers are gone by then). Knobs: CHANNELS (1000), SHARED (all), RATE (1000),
# BROADCAST_EVERY (30s), SIZE (bytes of each event's data, 64), PUBLISHERS (32: the
# publisher's keep-alive connections, one request in flight each).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-1000000}
HOLD=${HOLD:-10m}
PING=${PING:-30s}
RAMP=${RAMP:-4000}
PER_PROC=${PER_PROC:-18000}
PORT=${PORT:-9300}
OUT=${OUT:-bench/c1m-out}
MODE=${MODE:-idle}
CHANNELS=${CHANNELS:-1000}
SHARED=${SHARED:-all}
RATE=${RATE:-1000}
BROADCAST_EVERY=${BROADCAST_EVERY:-30s}
SIZE=${SIZE:-64}
PUBLISHERS=${PUBLISHERS:-32}
case "$MODE" in idle|channels) ;; *) echo "c1m.sh: MODE is idle or channels"; exit 2;; esac
PROCS=$(( (CONNS + PER_PROC - 1) / PER_PROC ))

to_secs() { # 10m, 90s, 1h -> seconds
  case "$1" in *m) echo $(( ${1%m} * 60 ));; *h) echo $(( ${1%h} * 3600 ));; *s) echo "${1%s}";; *) echo "$1";; esac
}
HOLD_S=$(to_secs "$HOLD")

[ "$(id -u)" = 0 ] || { echo "c1m.sh: run as root (it applies sysctls)"; exit 2; }

# 0. A network namespace of our own (NETNS=0 runs in the host's). Its TCP established-hash
# table is sized for both ends of every connection: the host's was sized at boot (262,144
# buckets on this machine), and at two million sockets each packet's lookup walks a chain of
# eight. net.ipv4.tcp_child_ehash_entries sizes the table of namespaces created after it is set
# (a host's own needs the thash_entries= boot parameter; see tuning/TUNING.md).
if [ "${NETNS:-1}" = 1 ] && [ -z "${C1M_IN_NETNS:-}" ]; then
  buckets=1; while [ "$buckets" -lt $(( CONNS * 2 )) ]; do buckets=$(( buckets * 2 )); done
  [ "$buckets" -gt 16777216 ] && buckets=16777216
  old_ehash=$(sysctl -n net.ipv4.tcp_child_ehash_entries)
  old_mem=$(sysctl -n net.ipv4.tcp_mem | tr '\t' ' ')
  ip netns del hf-c1m 2>/dev/null || true
  trap 'ip netns del hf-c1m 2>/dev/null || true; sysctl -q -w net.ipv4.tcp_child_ehash_entries=$old_ehash net.ipv4.tcp_mem="$old_mem" >/dev/null' EXIT
  sysctl -q -w net.ipv4.tcp_child_ehash_entries=$buckets >/dev/null
  # tcp_mem is host-wide (it has no per-namespace copy).
  sysctl -q -w net.ipv4.tcp_mem="1000000 2000000 3000000" >/dev/null
  ip netns add hf-c1m
  ip netns exec hf-c1m ip link set lo up
  rc=0
  C1M_IN_NETNS=1 ip netns exec hf-c1m bash "$0" "$@" || rc=$?
  exit $rc
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.log "$OUT"/*.json "$OUT"/*.txt

HF_PID=""; WL_PID=""; SAMPLER_PID=""
declare -A SAVED
restore() {
  [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null || true
  [ -n "$WL_PID" ] && kill "$WL_PID" 2>/dev/null || true
  [ -n "$HF_PID" ] && kill -9 "$HF_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  for k in "${!SAVED[@]}"; do sysctl -q -w "$k=${SAVED[$k]}" >/dev/null 2>&1 || true; done
}
trap restore EXIT

# 1. Tuning. Both ends of every connection are on this host: two sockets and two files each.
set_sysctl() {
  local key=$1 value=$2
  [ -e "/proc/sys/${key//.//}" ] || return 0
  SAVED[$key]=$(sysctl -n "$key" | tr '\t' ' ')
  # Some keys are read-only inside a network namespace (nf_conntrack_max): say so and go on.
  sysctl -q -w "$key=$value" >/dev/null 2>&1 || echo "c1m.sh: $key cannot be set here; left at ${SAVED[$key]}"
}
set_sysctl fs.file-max $(( CONNS * 2 + 1000000 ))
set_sysctl fs.nr_open 2097152
set_sysctl net.core.somaxconn 65535
set_sysctl net.ipv4.tcp_max_syn_backlog 65535
set_sysctl net.ipv4.ip_local_port_range "1024 65535"
set_sysctl net.ipv4.tcp_mem "1000000 2000000 3000000"
set_sysctl net.netfilter.nf_conntrack_max $(( CONNS * 2 + 100000 ))
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p holdfast -p wsload
HF=target/release/holdfast
# Absolute, so that pgrep -f finds this checkout's wsload (the parent and its shards) only.
WL=$(pwd)/target/release/wsload

{
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Network namespace: ${C1M_IN_NETNS:+hf-c1m, }TCP established hash $(sysctl -n net.ipv4.tcp_ehash_entries | tr -d -) buckets"
  echo "Run: CONNS=$CONNS HOLD=$HOLD PING=$PING RAMP=$RAMP PER_PROC=$PER_PROC -> server.processes=$PROCS, per-process open-file limit $(ulimit -Hn)"
  [ "$MODE" = channels ] && echo "Channels: MODE=channels CHANNELS=$CHANNELS SHARED=$SHARED RATE=$RATE BROADCAST_EVERY=$BROADCAST_EVERY SIZE=$SIZE PUBLISHERS=$PUBLISHERS"
  echo
  echo "\$ holdfast tune check --connections $CONNS   (after the tuning above)"
  "$HF" tune check --connections "$CONNS" || true
} > "$OUT/setup.txt" 2>&1

# 2. The server: PROCS processes of one worker each, pings every PING.
"$HF" serve \
  --set server.listen=127.0.0.1:$PORT --set server.tls_listen= \
  --set server.processes=$PROCS --set server.workers=1 \
  --set server.max_connections=$(( PROCS * ($(ulimit -Hn) - 100) )) \
  --set server.shutdown_timeout=300s --set http.keepalive_requests=1000000 \
  --set websocket.ping_interval=$PING \
  2> "$OUT/server.log" &
HF_PID=$!
for _ in $(seq 600); do grep -q '^holdfast: ready' "$OUT/server.log" && break; sleep 0.1; done
grep -q '^holdfast: ready' "$OUT/server.log" || { echo "c1m.sh: holdfast did not start"; tail "$OUT/server.log"; exit 1; }

metrics() { curl -s --max-time 20 "http://127.0.0.1:$PORT/metrics"; }
# Sum one series over every process.
msum() { awk -v n="$1" '$1 ~ "^"n"({|$)" && $1 !~ "_bucket" {s += $2} END {printf "%d\n", s}'; }
server_pids() { echo "$HF_PID" $(pgrep -P "$HF_PID" || true); }
# A process may exit between listing and reading: it then counts 0.
rss_kib() { local s=0 p v; for p in "$@"; do v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null); s=$(( s + ${v:-0} )); done; echo $s; }
ticks() { local s=0 p v; for p in "$@"; do v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null); s=$(( s + ${v:-0} )); done; echo $s; }
client_pids() { pgrep -f "$WL" | tr '\n' ' ' || true; }

# 3. The sampler: one CSV line every 5 s.
sampler() {
  local t0=$1
  echo "t,connections,server_rss_kib,server_cpu_ticks,client_rss_kib,slab_kib,sock_mem_pages,tcp_inuse,pings,pongs,closed,client_cpu_ticks,deliveries"
  while :; do
    local m pids cl
    m=$(metrics || true)
    pids=$(server_pids)
    cl=$(client_pids)
    echo "$(( $(date +%s) - t0 )),$(echo "$m" | msum holdfast_ws_connections_open),$(rss_kib $pids),$(ticks $pids),$(rss_kib $cl),$(awk '/^Slab:/ {print $2}' /proc/meminfo),$(awk '/^TCP:/ {print $NF}' /proc/net/sockstat),$(awk '/^TCP:/ {print $3}' /proc/net/sockstat),$(echo "$m" | msum holdfast_ws_pings_sent_total),$(echo "$m" | msum holdfast_ws_pongs_received_total),$(echo "$m" | msum holdfast_connections_closed_total),$(ticks $cl),$(echo "$m" | msum holdfast_channel_deliveries_total)"
    sleep 5
  done
}
T0=$(date +%s)
sampler "$T0" > "$OUT/samples.csv" &
SAMPLER_PID=$!
sleep 6 # a baseline sample before any connection

if [ "$MODE" = channels ]; then
# 4. The load: wsload subscribe, publishing once every subscriber is subscribed (see the top).
"$WL" subscribe --url "ws://127.0.0.1:$PORT/" -c "$CONNS" --ramp "$RAMP" \
  --channels "$CHANNELS" --shared-channel "$SHARED" --broadcast-every "$BROADCAST_EVERY" \
  --publish-rate "$RATE" --publish-duration "$HOLD" --size "$SIZE" --publishers "$PUBLISHERS" \
  --hold "$(( HOLD_S + 20 ))s" --json > "$OUT/wsload.json" 2> "$OUT/wsload.log" &
WL_PID=$!

# Wait for wsload to say it has started publishing (every subscriber subscribed or failed).
wait_for() { # PATTERN SECONDS: 0 once the log has the pattern, 1 at the bound or if wsload ended
  local t_end=$(( $(date +%s) + $2 ))
  while [ "$(date +%s)" -lt "$t_end" ]; do
    grep -q "$1" "$OUT/wsload.log" && return 0
    kill -0 "$WL_PID" 2>/dev/null || { grep -q "$1" "$OUT/wsload.log"; return; }
    sleep 1
  done
  return 1
}
ramp_limit=$(( CONNS / RAMP * 3 + 180 ))
t_start=$(date +%s)
wait_for "publishing started" "$ramp_limit" || { echo "c1m.sh: wsload did not start publishing in ${ramp_limit}s"; tail -3 "$OUT/wsload.log"; exit 1; }
t_full=$(date +%s)
# CPU first: a scrape of a saturated server can take many seconds.
cpu_a=$(ticks $(server_pids)); ccpu_a=$(ticks $(client_pids)); t_a=$(date +%s.%N)
metrics > "$OUT/metrics-held-start.txt"
open=$(msum holdfast_ws_connections_open < "$OUT/metrics-held-start.txt")
echo "connected=$open seconds=$(( t_full - t_start ))" > "$OUT/ramp.txt"
echo "c1m.sh: $open subscribers after $(( t_full - t_start ))s; publishing for $HOLD"

wait_for "publishing done" $(( HOLD_S + 120 )) || echo "c1m.sh: wsload did not finish publishing in time"
cpu_b=$(ticks $(server_pids)); ccpu_b=$(ticks $(client_pids)); t_b=$(date +%s.%N)
metrics > "$OUT/metrics-held-end.txt"
echo "hold_seconds=$(printf %.0f "$(echo "$t_b - $t_a" | bc)") cpu_ticks=$(( cpu_b - cpu_a )) client_cpu_ticks=$(( ccpu_b - ccpu_a )) clk_tck=$(getconf CLK_TCK)" > "$OUT/hold.txt"
tail -1 "$OUT/wsload.log" > "$OUT/wsload-at-hold-end.txt" || true

# wsload holds its subscribers 20 s past the publishing (--hold, so the scrape above sees them
# all), waits for the deliveries to settle (60 s at most), closes them (10 s at most) and
# reports.
for _ in $(seq 300); do kill -0 "$WL_PID" 2>/dev/null || break; sleep 1; done
if kill -0 "$WL_PID" 2>/dev/null; then echo "c1m.sh: wsload still running 300 s after publishing; stopping it"; kill -INT "$WL_PID"; fi
wait "$WL_PID" && wl_rc=0 || wl_rc=$?
WL_PID=""
echo "exit=$wl_rc" > "$OUT/wsload-exit.txt"
metrics > "$OUT/metrics-after.txt"

# The subscribers are gone: stop the server (no drain to time).
t_term=$(date +%s.%N)
kill -TERM "$HF_PID"
wait "$HF_PID" && rc=0 || rc=$?
t_done=$(date +%s.%N)
HF_PID=""
echo "exit=$rc seconds=$(echo "$t_done - $t_term" | bc) open=0" > "$OUT/drain.txt"
sleep 6
kill "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
else
# 4. The load: wsload idle, answering the server's pings. Its hold is longer than ours: we stop
# the server while every connection is still open, to time the drain.
"$WL" idle --url "ws://127.0.0.1:$PORT/ws" -c "$CONNS" --ramp "$RAMP" \
  --hold "$(( HOLD_S + 600 ))s" --json > "$OUT/wsload.json" 2> "$OUT/wsload.log" &
WL_PID=$!

# Wait until every connection is open (or the ramp has long finished).
ramp_limit=$(( CONNS / RAMP * 3 + 120 ))
t_start=$(date +%s)
while :; do
  open=$(metrics | msum holdfast_ws_connections_open)
  [ "$open" -ge "$CONNS" ] && break
  if [ $(( $(date +%s) - t_start )) -gt "$ramp_limit" ]; then echo "c1m.sh: only $open of $CONNS connected after ${ramp_limit}s"; break; fi
  sleep 1
done
t_full=$(date +%s)
echo "connected=$open seconds=$(( t_full - t_start ))" > "$OUT/ramp.txt"
metrics > "$OUT/metrics-held-start.txt"
cpu_a=$(ticks $(server_pids))
echo "c1m.sh: $open connections after $(( t_full - t_start ))s; holding $HOLD"

sleep "$HOLD_S"

metrics > "$OUT/metrics-held-end.txt"
cpu_b=$(ticks $(server_pids))
echo "hold_seconds=$HOLD_S cpu_ticks=$(( cpu_b - cpu_a )) clk_tck=$(getconf CLK_TCK)" > "$OUT/hold.txt"
tail -1 "$OUT/wsload.log" > "$OUT/wsload-at-hold-end.txt" || true

# 5. Drain: SIGTERM with every connection open; the server sends 1001 closes and waits for the
# clients' answers.
t_term=$(date +%s.%N)
kill -TERM "$HF_PID"
wait "$HF_PID" && rc=0 || rc=$?
t_done=$(date +%s.%N)
HF_PID=""
echo "exit=$rc seconds=$(echo "$t_done - $t_term" | bc)" > "$OUT/drain.txt"
sleep 6
kill "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
kill -INT "$WL_PID" 2>/dev/null || true
wait "$WL_PID" 2>/dev/null || true
WL_PID=""
fi

python3 bench/c1m_report.py "$OUT"
