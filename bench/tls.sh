#!/usr/bin/env bash
# TLS: holdfast versus nginx (OpenSSL, session tickets and cache on), one worker each on CPU 0,
# clients on CPU 1, interleaved rep by rep, medians of REPS. Both servers present the same
# ECDSA P-256 certificate. Writes bench/results/tls.md: the medians, then resumed/full paired
# rep by rep and how busy each server was (bench/pair_ratios.py).
#
# Scenarios (rate = handshakes or requests per second; CPU = server utime+stime per unit):
#   full12, resumed12   `openssl s_time -tls1_2 -new|-reuse`, CLIENTS processes in parallel
#   full13              `openssl s_time -tls1_3 -new`
#   https_c100          `wrk -t1 -c100` keep-alive GET /plaintext over TLS
#   hs_full12, hs_resumed12, hs_full13, hs_resumed13
#                       `wsload handshakes` (rustls client, one process on CPU 1) keeping
#                       IN_FLIGHT handshakes in flight: a server sees them arrive together, as
#                       from many clients, instead of one at a time as from s_time's processes,
#                       and the cheaper client takes the server much closer to a full core.
#                       --no-resume still takes tickets (a first visit). hs_resumed13 is
#                       psk_dhe_ke (a fresh X25519 exchange, no certificate signature)
# s_time has no TLS 1.3 resumption: it closes before it reads a TLS 1.3 ticket.
#
# Both servers get TCP_DEFER_ACCEPT (nginx `deferred`, holdfast `server.defer_accept`), as a
# deployment that serves many short TLS connections would; DEFER=0 runs both without it.
#
# QUOTA=0.4 caps each server at 0.4 of a core (a CFS quota, bench/lib.sh cap_cpu; root): one
# client core cannot keep a holdfast core busy, so the handshakes per second it sees are the
# client's; under a cap below what the client can feed, both servers are the ceiling and the
# rates and their ratios are the servers' own.
#
#   bash bench/tls.sh                       # REPS=3 DURATION=8 CLIENTS=4 IN_FLIGHT=64
#   SCENARIOS="hs_full12 hs_resumed12" QUOTA=0.4 REPS=7 bash bench/tls.sh
#   SCENARIOS="full12 resumed12" REPS=5 bash bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-8}
CLIENTS=${CLIENTS:-4}
IN_FLIGHT=${IN_FLIGHT:-64}
DEFER=${DEFER:-1}
QUOTA=${QUOTA:-}
if [ "$DEFER" = 1 ]; then DEFERRED=deferred; HF_DEFER=true; else DEFERRED=; HF_DEFER=false; fi
HF_PORT=${HF_PORT:-18443}
NG_PORT=${NG_PORT:-18444}
WORK=$(mktemp -d /tmp/holdfast-tls-bench.XXXXXX)
OUT=bench/results/tls.md
mkdir -p bench/results

for tool in wrk nginx openssl; do
  command -v $tool >/dev/null || { echo "$tool is not installed (apt-get install $tool)"; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p holdfast -p wsload
HF=target/release/holdfast
WSLOAD=target/release/wsload

# shellcheck source=bench/lib.sh
source bench/lib.sh
make_cert
sed -e "s#__DIR__#$WORK#g" -e "s#__PORT__#$NG_PORT#g" -e "s#__DEFERRED__#$DEFERRED#" \
  bench/nginx-tls.conf > "$WORK/nginx.conf"
mkdir -p "$WORK/body"

taskset -c 0 "$HF" serve --set server.listen=127.0.0.1:0 --set server.tls_listen=127.0.0.1:$HF_PORT \
  --set server.workers=1 --set http.keepalive_requests=1000000 --set server.defer_accept=$HF_DEFER \
  --set tls.cert="$WORK/cert.pem" --set tls.key="$WORK/key.pem" 2>"$WORK/holdfast.log" &
HF_PID=$!
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" &
NG_PID=$!
wait_both_up -skf "https://127.0.0.1:$HF_PORT/plaintext" "https://127.0.0.1:$NG_PORT/plaintext"
if [ -n "$QUOTA" ]; then
  cap_cpu holdfast "$QUOTA" "$HF_PID"
  cap_cpu nginx "$QUOTA" "$NG_PID" "$NG_WORKER"
fi

now() { date +%s.%N; }

# Each prints "units elapsed_seconds".
s_time_run() { # port version mode
  local port=$1 version=$2 mode=$3 start end total=0
  start=$(now)
  for c in $(seq "$CLIENTS"); do
    taskset -c 1 openssl s_time -connect "127.0.0.1:$port" "$version" "$mode" -time "$DURATION" \
      >"$WORK/s_time.$c" 2>&1 &
  done
  wait
  end=$(now)
  for c in $(seq "$CLIENTS"); do
    total=$((total + $(awk '/connections in .* real seconds/ {print $1}' "$WORK/s_time.$c")))
  done
  echo "$total $(echo "$end - $start" | bc)"
}

wsload_run() { # port version [--no-resume]
  local out
  out=$(taskset -c 1 "$WSLOAD" handshakes --url "https://127.0.0.1:$1/" --insecure --tls-version "$2" \
    -c "$IN_FLIGHT" --duration "${DURATION}s" --json "${@:3}")
  echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["handshakes"], j["seconds"])'
}

wrk_run() { # port
  local out
  out=$(taskset -c 1 wrk -t1 -c100 -d"${DURATION}s" "https://127.0.0.1:$1/plaintext")
  echo "$(echo "$out" | awk '/requests in/ {print $1}') $(echo "$out" | awk '/requests in/ {sub(/s,/, "", $4); print $4}')"
}

# run PID PORT SCENARIO -> "rate_per_s cpu_us_per_unit"
run() {
  local pid=$1 port=$2 sc=$3 before after r
  before=$(cpu_ticks "$pid")
  case $sc in
    full12) r=$(s_time_run "$port" -tls1_2 -new) ;;
    resumed12) r=$(s_time_run "$port" -tls1_2 -reuse) ;;
    full13) r=$(s_time_run "$port" -tls1_3 -new) ;;
    https_c100) r=$(wrk_run "$port") ;;
    hs_full12) r=$(wsload_run "$port" 1.2 --no-resume) ;;
    hs_resumed12) r=$(wsload_run "$port" 1.2) ;;
    hs_full13) r=$(wsload_run "$port" 1.3 --no-resume) ;;
    hs_resumed13) r=$(wsload_run "$port" 1.3) ;;
  esac
  after=$(cpu_ticks "$pid")
  per_unit "$r" "$before" "$after"
}


read -r -a SCENARIOS <<<"${SCENARIOS:-hs_full12 hs_resumed12 hs_full13 hs_resumed13 full12 resumed12 full13 https_c100}"
declare -A RES
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    if [ $((rep % 2)) -eq 1 ]; then order="nginx holdfast"; else order="holdfast nginx"; fi
    for srv in $order; do
      if [ "$srv" = nginx ]; then r=$(run "$NG_WORKER" "$NG_PORT" "$sc");
      else r=$(run "$HF_PID" "$HF_PORT" "$sc"); fi
      RES[$srv,$sc]+="$r"$'\n'
      echo "rep $rep $sc $srv: $r per s, us-cpu each" | tee -a "$WORK/reps" >&2
    done
  done
done
grep -E "handshakes_total|tls_failures_total\{reason=\"(other|protocol)\"\}" \
  <(curl -s "http://$(awk '/listening on http:/ {sub("http://", "", $4); print $4}' "$WORK/holdfast.log")/metrics") >&2 || true

{
  echo "### TLS, clients on CPU 1, server one worker (CPU 0${QUOTA:+, capped at $QUOTA of it}), ${DURATION}s x $REPS reps, medians"
  echo
  echo "$(machine_line) with $(openssl version | cut -d' ' -f1-2); ECDSA P-256 certificate; command: \`${QUOTA:+QUOTA=$QUOTA }DEFER=$DEFER SCENARIOS=\"${SCENARIOS[*]}\" REPS=$REPS DURATION=$DURATION CLIENTS=$CLIENTS IN_FLIGHT=$IN_FLIGHT bash bench/tls.sh\`"
  echo
  echo "| scenario | nginx /s | holdfast /s | ratio | nginx µs CPU each | holdfast µs CPU each | CPU ratio (nginx/holdfast) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for sc in "${SCENARIOS[@]}"; do
    table_row "$sc" "${RES[nginx,$sc]}" "${RES[holdfast,$sc]}"
  done
  echo
  python3 bench/pair_ratios.py <"$WORK/reps"
} | tee "$OUT"
