#!/usr/bin/env bash
# Cluster fan-out through Redis (issue 17): three holdfast nodes joined by one redis-server
# (README "Many nodes: a cluster through Redis", CHANNELS.md §5) versus one holdfast node alone
# versus three nginx + nchan instances storing their messages in one redis-server
# (bench/nginx-nchan-redis.conf). SUBS WebSocket subscribers, on 1 channel or spread over 100;
# wsload publishes SIZE-byte events on ONE node's HTTP API at a rate well below saturation and
# counts every delivery (lost, duplicated, out of order; latency per delivery and from publish
# to the last subscriber). Writes bench/results/cluster.md: medians of REPS, the ratios next to
# the targets, then every run (and bench/results/cluster.jsonl, every run's figures).
#
# Servers (per rep the order rotates; each run gets fresh processes and a fresh Redis):
#   holdfast-cluster  redis-server, three holdfast nodes (`cluster.redis`, one worker each),
#                     HAProxy in front (TCP mode, round robin: bench/haproxy-cluster.cfg);
#                     subscribers through HAProxy, so a third land on each node; events
#                     published on node 1's HTTP API
#   holdfast-single   one holdfast node, no Redis, no HAProxy: subscribers and publisher
#                     direct (the baseline the cluster's latency is held against)
#   nchan-redis       redis-server, three nginx + nchan (one worker each, nchan_use_redis),
#                     HAProxy in front as above; published on nginx 1's /pub/CH
#   holdfast-single-proxied  one holdfast node behind the same HAProxy: the cluster's
#                     proxy hop without Redis. The target compares the cluster with the direct
#                     single node; this one tells how much of the difference is HAProxy's
#                     relay (which shares CPU 1 with wsload) and how much the trip through Redis
# Scenarios:  one      SUBS subscribers on 1 channel, LAT_RATE_ONE events/s
#             hundred  SUBS subscribers over 100 channels, LAT_RATE_HUNDRED events/s
# (both SUBS x 5 = 50,000 deliveries/s at the defaults, as bench/fanout.sh's latency runs).
#
# Pinning on this 2-core host: CPU 0 holds what is measured (the holdfast nodes or nginx
# instances and the redis-server); CPU 1 the client side (wsload, and HAProxy, which every
# proxied delivery crosses: its share of CPU 1 is the same for both peers; PROXY_CPU=0 moves
# it beside the servers instead). In the trial runs made while writing this, HAProxy cost
# about 14 µs of CPU per relayed delivery, so that at 10,000 subscribers and 50,000
# deliveries/s CPU 1 was about 90 % busy with it and wsload, and one holdfast node behind it
# had twice the delivery p99 of the same node reached directly: the proxy hop, not Redis, made
# most of the cluster's latency over the direct single node's (hence holdfast-single-proxied).
# One HAProxy process holds two descriptors per subscriber; past the file limit
# (ulimit -Hn) the script starts several on the same port (SO_REUSEPORT) and the kernel
# spreads the subscribers over them.
#
# Figures, all over the publishing window (from PUBLISH_DELAY s after every subscriber has
# subscribed, when publishing starts, to when the deliveries have settled; wsload reads /proc
# and /metrics at those moments itself; the delay keeps what subscribing set off, such as the
# nodes' subscriber counts crossing on their next one-second tick, out of the window):
#   server CPU per delivery  utime+stime of the three nodes (holdfast processes; nginx
#                            workers) summed / deliveries; Redis's own per delivery apart, and
#                            a total with Redis; HAProxy's apart, for information
#   bus messages per event   holdfast_channel_bus_messages_total{direction="out"} and
#                            {direction="in"} summed over the nodes' /metrics, grown over the
#                            window, / events published; "net" subtracts what the bus carried
#                            while idle (members' keep-alives: measured for BUS_IDLE s before
#                            the subscribers connect, scaled to the window)
#   spread                   subscribers per node, from HAProxy's session counts
#   log warnings             warn/error lines the servers logged (the holdfast file-limit
#                            notice at start and nchan's deprecation notices aside)
# This host is shared: before each run the script waits (at most QUIET_WAIT s) until the
# whole machine was less than QUIET_PCT % busy over a second, and records what it saw.
#
#   bash bench/cluster.sh                                   # REPS=3, SUBS=10000, DURATION=8
#   SUBS=2000 REPS=1 DURATION=5 bash bench/cluster.sh       # a smoke run
#   SERVERS="holdfast-cluster holdfast-single" SCENARIOS=one bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
SUBS=${SUBS:-10000}
SIZE=${SIZE:-64}
SCENARIOS=${SCENARIOS:-"one hundred"}
SERVERS=${SERVERS:-"holdfast-cluster holdfast-single holdfast-single-proxied nchan-redis"}
DURATION=${DURATION:-8}
LAT_RATE_ONE=${LAT_RATE_ONE:-5}          # events/s: x SUBS deliveries/s
LAT_RATE_HUNDRED=${LAT_RATE_HUNDRED:-500} # events/s: x SUBS/100 deliveries/s
PUBLISHERS=${PUBLISHERS:-16}              # publisher connections (at most one per channel)
BUS_IDLE=${BUS_IDLE:-3}                   # s of idle bus measured before each holdfast-cluster run
PUBLISH_DELAY=${PUBLISH_DELAY:-2}         # s between all subscribed and the first publish
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-120}
PORT=${PORT:-18400}                       # redis PORT, nodes PORT+1..3, HAProxy PORT+4
PROXY_CPU=${PROXY_CPU:-1}                 # the CPU HAProxy is pinned to
KEEP=${KEEP:-}                            # KEEP=1 keeps the work directory (logs) at the end
REDIS_PORT=$PORT
NODE_PORTS=($((PORT + 1)) $((PORT + 2)) $((PORT + 3)))
PROXY_PORT=$((PORT + 4))
OUT=${OUT:-bench/results/cluster.md}      # the report (and its .jsonl beside it)
WORK=$(mktemp -d /tmp/holdfast-cluster-bench.XXXXXX)
mkdir -p bench/results

for bin in redis-server haproxy nginx; do
  command -v "$bin" >/dev/null || { echo "$bin is not installed (apt-get install redis-server haproxy nginx-light libnginx-mod-nchan)"; exit 1; }
done
[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] ||
  { echo "nchan is not installed (apt-get install nginx-light libnginx-mod-nchan)"; exit 1; }
ulimit -n "$(ulimit -Hn)"
LIMIT=$(ulimit -n)
[ "$LIMIT" -ge $((SUBS + 1000)) ] || { echo "ulimit -n $LIMIT is below SUBS + 1000"; exit 1; }
# Per HAProxy process: two descriptors per connection, some to spare. Enough processes that
# an uneven split by the kernel still fits (each gets about SUBS / PROXIES).
PROXY_MAXCONN=$(((LIMIT - 300) / 2))
PROXIES=$(((SUBS * 5 / 4 + PROXY_MAXCONN - 1) / PROXY_MAXCONN))
for kv in net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535; do
  sysctl -qw "$kv" 2>/dev/null || true
done

cargo build --release -q -p holdfast -p wsload
HF=target/release/holdfast
WSLOAD=target/release/wsload

# Every process this script started and has not stopped yet; killed by PID on any exit.
STARTED=()
stop_all() {
  local p
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${STARTED[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  STARTED=()
}
cleanup() {
  stop_all
  if [ -n "$KEEP" ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until URL answers with one of the statuses (a regex), at most 10 s.
wait_status() {
  local url=$1 want=$2 code
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
    [[ $code =~ ^($want)$ ]] && return 0
    sleep 0.1
  done
  echo "$url never answered $want (last: $code)" >&2
  return 1
}

start_redis() {
  taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$RUN_DIR/redis.log" --dir "$RUN_DIR" &
  REDIS_PID=$!
  STARTED+=("$REDIS_PID")
  for _ in $(seq 50); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "redis-server did not start" >&2
  return 1
}

# start_holdfast I [cluster]: node I on NODE_PORTS[I]; appends its pid to NODE_PIDS.
start_holdfast() {
  local i=$1 sets=()
  [ "${2:-}" = cluster ] &&
    sets=(--set "cluster.redis=redis://127.0.0.1:$REDIS_PORT/0" --set cluster.prefix=bench)
  taskset -c 0 "$HF" serve --set "server.listen=127.0.0.1:${NODE_PORTS[$i]}" --set server.tls_listen= \
    --set server.workers=1 --set websocket.permessage_deflate=false \
    --set http.keepalive_requests=1000000 "${sets[@]}" 2>>"$RUN_DIR/holdfast-$i.log" &
  NODE_PIDS+=($!)
  STARTED+=($!)
  wait_status "http://127.0.0.1:${NODE_PORTS[$i]}/plaintext" 200
}

# start_nchan I: nginx instance I on NODE_PORTS[I]; appends its worker's pid to NODE_PIDS.
start_nchan() {
  local i=$1 dir=$RUN_DIR/nginx-$1 master worker
  mkdir -p "$dir/body"
  sed -e "s#__DIR__#$dir#g" -e "s#__PORT__#${NODE_PORTS[$i]}#g" -e "s#__REDIS__#$REDIS_PORT#g" \
    bench/nginx-nchan-redis.conf >"$dir/nginx.conf"
  taskset -c 0 nginx -c "$dir/nginx.conf" -p "$dir" 2>>"$dir/stderr.log" &
  master=$!
  STARTED+=("$master")
  # 503 until its worker is connected to Redis; then a GET on an unknown channel is a 404.
  wait_status "http://127.0.0.1:${NODE_PORTS[$i]}/pub/up" 404
  worker=$(pgrep -P "$master" | head -1)
  NODE_PIDS+=("$worker")
}

# start_proxies NODES: HAProxy in front of the first NODES nodes.
start_proxies() {
  local n i servers=""
  for i in $(seq 0 $(($1 - 1))); do
    servers+="    server node$((i + 1)) 127.0.0.1:${NODE_PORTS[$i]}\n" # awk -v makes \n a newline
  done
  for n in $(seq "$PROXIES"); do
    sed -e "s#__DIR__#$RUN_DIR#g" -e "s#__N__#$n#g" -e "s#__PORT__#$PROXY_PORT#g" \
      -e "s#__MAXCONN__#$PROXY_MAXCONN#g" bench/haproxy-cluster.cfg |
      awk -v servers="$servers" '$1 == "__SERVERS__" { printf "%s", servers; next } { print }' \
      >"$RUN_DIR/haproxy-$n.cfg"
    taskset -c "$PROXY_CPU" haproxy -db -f "$RUN_DIR/haproxy-$n.cfg" 2>>"$RUN_DIR/haproxy-$n.log" &
    PROXY_PIDS+=($!)
    STARTED+=($!)
    for _ in $(seq 50); do [ -S "$RUN_DIR/haproxy-$n.sock" ] && break; sleep 0.1; done
  done
}

# Subscribers per node so far: HAProxy's session totals per backend server, summed over the
# HAProxy processes, as "a/b/c".
spread() {
  python3 - "$RUN_DIR"/haproxy-*.sock <<'EOF'
import socket, sys
total = {}
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    s.connect(path)
    s.sendall(b"show stat\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        f = dict(zip(head, line.split(",")))
        if f.get("svname", "").startswith("node"):
            total[f["svname"]] = total.get(f["svname"], 0) + int(f["stot"] or 0)
print("/".join(str(total[k]) for k in sorted(total)))
EOF
}

# The bus counters summed over the nodes: "in out".
bus_counters() {
  local port
  for port in "${NODE_PORTS[@]}"; do curl -s "http://127.0.0.1:$port/metrics"; done |
    awk '/^holdfast_channel_bus_messages_total\{direction="in"\}/ { i += $2 }
         /^holdfast_channel_bus_messages_total\{direction="out"\}/ { o += $2 }
         END { printf "%d %d", i, o }'
}

# Until every node hears all three members (itself included), at most 10 s.
wait_members() {
  local port n
  for _ in $(seq 100); do
    n=0
    for port in "${NODE_PORTS[@]}"; do
      curl -s "http://127.0.0.1:$port/metrics" | grep -qx 'holdfast_cluster_members 3' && n=$((n + 1))
    done
    [ "$n" = 3 ] && return 0
    sleep 0.1
  done
  echo "the nodes never all heard each other" >&2
  return 1
}

# Warnings and errors the servers logged (known start-up notices aside); printed to stderr.
log_warnings() {
  local f n total=0
  for f in "$RUN_DIR"/holdfast-*.log "$RUN_DIR"/nginx-*/nginx-error.log "$RUN_DIR"/nginx-*/stderr.log \
           "$RUN_DIR"/haproxy-*.log; do
    [ -e "$f" ] || continue
    n=$(grep -Ei 'warn|error|alert|crit|emerg|panic' "$f" |
        grep -Ev 'server\.max_connections = .* a process may open at most|is discouraged in favor of' |
        tee -a "$RUN_DIR/warnings" | wc -l)
    if [ "$n" -gt 0 ]; then
      echo "  $(basename "$(dirname "$f")")/$(basename "$f"): $n warning/error lines:" >&2
      grep -Ei 'warn|error|alert|crit|emerg|panic' "$f" |
        grep -Ev 'server\.max_connections = .* a process may open at most|is discouraged in favor of' |
        head -5 | sed 's/^/    /' >&2
    fi
    total=$((total + n))
  done
  echo "$total"
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

# run SERVER SCENARIO REP RATE: one wsload run against freshly started servers; appends its
# figures to runs.jsonl (bench/cluster_report.py line) and prints a summary.
run() {
  local server=$1 scenario=$2 rep=$3 rate=$4 channels url publish peer json i
  local idle_a idle_b idle_in=0 idle_out=0 idle_s=0 spread_s="" warnings
  local watch=() others=() metrics=()
  case $scenario in one) channels=1 ;; hundred) channels=100 ;; esac
  wait_quiet
  RUN_DIR=$WORK/run-$rep-$scenario-$server
  mkdir -p "$RUN_DIR"
  NODE_PIDS=(); PROXY_PIDS=(); REDIS_PID=""
  case $server in
    holdfast-cluster)
      start_redis
      for i in 0 1 2; do start_holdfast "$i" cluster; done
      wait_members
      start_proxies 3
      # The bus while idle: the members' keep-alives, to take out of the per-event figures.
      idle_a=$(bus_counters); sleep "$BUS_IDLE"; idle_b=$(bus_counters)
      read -r idle_in idle_out <<<"$(echo "$idle_a $idle_b" | awk '{print $3 - $1, $4 - $2}')"
      idle_s=$BUS_IDLE
      peer=pusher
      url=ws://127.0.0.1:$PROXY_PORT/
      publish=http://127.0.0.1:${NODE_PORTS[0]}/
      for i in 0 1 2; do metrics+=(--metrics-url "http://127.0.0.1:${NODE_PORTS[$i]}/metrics"); done ;;
    holdfast-single)
      start_holdfast 0
      peer=pusher
      url=ws://127.0.0.1:${NODE_PORTS[0]}/
      publish=http://127.0.0.1:${NODE_PORTS[0]}/ ;;
    holdfast-single-proxied)
      start_holdfast 0
      start_proxies 1
      peer=pusher
      url=ws://127.0.0.1:$PROXY_PORT/
      publish=http://127.0.0.1:${NODE_PORTS[0]}/ ;;
    nchan-redis)
      start_redis
      for i in 0 1 2; do start_nchan "$i"; done
      start_proxies 3
      peer=nchan
      url=ws://127.0.0.1:$PROXY_PORT/
      publish=http://127.0.0.1:${NODE_PORTS[0]}/ ;;
    *) echo "unknown server $server"; exit 1 ;;
  esac
  for i in "${NODE_PIDS[@]}"; do watch+=(--server-pid "$i"); done
  [ -n "$REDIS_PID" ] && others+=(--other-pid "$REDIS_PID")
  for i in "${PROXY_PIDS[@]}"; do others+=(--other-pid "$i"); done
  json=$(taskset -c 1 timeout 300 "$WSLOAD" subscribe --peer "$peer" --url "$url" --publish-url "$publish" \
           -c "$SUBS" --channels "$channels" --size "$SIZE" --publish-rate "$rate" \
           --events $((rate * DURATION)) --publishers "$PUBLISHERS" --publish-delay "${PUBLISH_DELAY}s" \
           "${watch[@]}" "${others[@]}" "${metrics[@]}" --json 2>>"$RUN_DIR/wsload.log" || true)
  [ "${#PROXY_PIDS[@]}" -gt 0 ] && spread_s=$(spread || true)
  stop_all
  warnings=$(log_warnings)
  python3 bench/cluster_report.py line "$json" "$(printf '{"server":"%s","scenario":"%s","rep":%d,"rate":%d,"subs":%d,"host_busy_pct":%d,"redis_pid":%s,"proxy_pids":[%s],"bus_idle_s":%s,"bus_idle_in":%d,"bus_idle_out":%d,"spread":"%s","log_warnings":%d}' \
      "$server" "$scenario" "$rep" "$rate" "$SUBS" "$BUSY" "${REDIS_PID:-null}" \
      "$(IFS=,; echo "${PROXY_PIDS[*]}")" "$idle_s" "$idle_in" "$idle_out" "$spread_s" "$warnings")" \
    >>"$WORK/runs.jsonl"
  python3 bench/cluster_report.py brief "$(tail -1 "$WORK/runs.jsonl")" >&2
}

read -r -a SERVER_LIST <<<"$SERVERS"
K=${#SERVER_LIST[@]}
for rep in $(seq "$REPS"); do
  order=("${SERVER_LIST[@]:$((rep % K))}" "${SERVER_LIST[@]:0:$((rep % K))}")
  for scenario in $SCENARIOS; do
    case $scenario in
      one) rate=$LAT_RATE_ONE ;;
      hundred) rate=$LAT_RATE_HUNDRED ;;
      *) echo "unknown scenario $scenario"; exit 1 ;;
    esac
    for s in "${order[@]}"; do run "$s" "$scenario" "$rep" "$rate"; done
  done
done

{
  echo "### Cluster fan-out through Redis, $SUBS WebSocket subscribers, $SIZE-byte events: three holdfast nodes vs one holdfast node (direct, and behind HAProxy) vs three nginx + nchan on Redis, $REPS reps, medians"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(date -u +%Y-%m-%d); holdfast $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes'), redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null | sed 's/^[0-9]*://; s/+.*//'); command: \`PROXY_CPU=$PROXY_CPU REPS=$REPS SUBS=$SUBS DURATION=$DURATION SCENARIOS=\"$SCENARIOS\" SERVERS=\"$SERVERS\" LAT_RATE_ONE=$LAT_RATE_ONE LAT_RATE_HUNDRED=$LAT_RATE_HUNDRED bash bench/cluster.sh\` ($LAT_RATE_ONE events/s on 1 channel, $LAT_RATE_HUNDRED events/s over 100 channels, published for ${DURATION}s on node 1's API starting ${PUBLISH_DELAY}s after every subscriber had subscribed, $PUBLISHERS publisher connections at most; servers and redis-server pinned to CPU 0, wsload to CPU 1, HAProxy ($PROXIES process(es), TCP mode, round robin) to CPU $PROXY_CPU; the subscribers of the cluster, of nchan and of holdfast-single-proxied through HAProxy, holdfast-single's direct; each run waited for the host to be under $QUIET_PCT % busy, at most ${QUIET_WAIT}s)"
  echo
  python3 bench/cluster_report.py table "$WORK/runs.jsonl"
} | tee "$OUT"
# Every run's figures as read, to render again (python3 bench/cluster_report.py table FILE).
cp "$WORK/runs.jsonl" "${OUT%.md}.jsonl"
