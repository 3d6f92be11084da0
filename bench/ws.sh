#!/usr/bin/env bash
# WebSocket echo: holdfast versus fastwebsockets and tokio-tungstenite (bench/peers), one core
# each (server on CPU 0, wsload on CPU 1), 64-byte messages, interleaved rep by rep with the
# order rotating; medians of messages/s and of server CPU time per message. Writes
# bench/results/ws.md.
#
#   bash bench/ws.sh                         # REPS=3 DURATION=10s, 100 and 10000 connections
#   REPS=5 CONNS="100" bash bench/ws.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-"100 10000"}
SIZE=${SIZE:-64}
OUT=bench/results/ws.md
mkdir -p bench/results
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p holdfast -p wsload
(cd bench/peers && cargo build --release -q)
WSLOAD=target/release/wsload

declare -A PORT=([holdfast]=18180 [fastwebsockets]=18181 [tokio-tungstenite]=18182)
declare -A PID
start() {
  case $1 in
    holdfast) taskset -c 0 target/release/holdfast serve --set server.listen=127.0.0.1:${PORT[holdfast]} \
                --set server.tls_listen= --set server.workers=1 --set websocket.permessage_deflate=false 2>/dev/null & ;;
    fastwebsockets) taskset -c 0 bench/peers/target/release/fastws-echo 127.0.0.1:${PORT[fastwebsockets]} 2>/dev/null & ;;
    tokio-tungstenite) taskset -c 0 bench/peers/target/release/tungstenite-echo 127.0.0.1:${PORT[tokio-tungstenite]} 2>/dev/null & ;;
  esac
  PID[$1]=$!
}
cleanup() { for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
SERVERS=(holdfast fastwebsockets tokio-tungstenite)
for s in "${SERVERS[@]}"; do start "$s"; done
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A RES
for rep in $(seq "$REPS"); do
  for c in $CONNS; do
    # Rotate the order each rep so no server always runs first.
    order=("${SERVERS[@]:$((rep % 3))}" "${SERVERS[@]:0:$((rep % 3))}")
    for s in "${order[@]}"; do
      before=$(cpu_ticks "${PID[$s]}")
      json=$(taskset -c 1 "$WSLOAD" echo --url "ws://127.0.0.1:${PORT[$s]}/ws" -c "$c" --size "$SIZE" \
               --duration "$DURATION" --warmup 2s --json 2>/dev/null || true)
      after=$(cpu_ticks "${PID[$s]}")
      r=$(python3 -c "
import json,sys
j=json.loads(sys.argv[1]); t=int(sys.argv[2]); hz=int(sys.argv[3])
m=j['messages']; print(round(j['messages_per_sec']), round(t/hz*1e6/m, 3) if m else 0, j['rtt_us']['p99'], j['connected'])" \
        "$json" "$((after - before))" "$TICK")
      RES[$s,$c]+="$r"$'\n'
      echo "rep $rep c$c $s: $r (msgs/s, server µs CPU/msg, p99 µs, connected)" >&2
      sleep 1
    done
  done
done

{
  echo "### WebSocket echo, $SIZE-byte messages, wsload (CPU 1) against one server core (CPU 0), $DURATION x $REPS reps, medians"
  echo
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(date -u +%Y-%m-%d); command: \`REPS=$REPS DURATION=$DURATION CONNS=\"$CONNS\" bash bench/ws.sh\`"
  echo
  echo "| connections | server | msgs/s | vs fastwebsockets | µs CPU/msg | CPU vs fastwebsockets | p99 RTT µs |"
  echo "|---:|---|---:|---:|---:|---:|---:|"
  for c in $CONNS; do
    fr=$(printf "%s" "${RES[fastwebsockets,$c]}" | awk '{print $1}' | median)
    fc=$(printf "%s" "${RES[fastwebsockets,$c]}" | awk '{print $2}' | median)
    for s in "${SERVERS[@]}"; do
      r=$(printf "%s" "${RES[$s,$c]}" | awk '{print $1}' | median)
      cp=$(printf "%s" "${RES[$s,$c]}" | awk '{print $2}' | median)
      p99=$(printf "%s" "${RES[$s,$c]}" | awk '{print $3}' | median)
      awk -v c="$c" -v s="$s" -v r="$r" -v fr="$fr" -v cp="$cp" -v fc="$fc" -v p="$p99" \
        'BEGIN { printf "| %s | %s | %d | %.2f× | %.2f | %.2f× | %d |\n", c, s, r, r/fr, cp, (cp > 0 ? fc/cp : 0), p }'
    done
  done
} | tee "$OUT"
