#!/usr/bin/env bash
# HTTP/2: holdfast versus nginx (`http2` on both listeners), one worker each on CPU 0, h2load
# (Debian's nghttp2-client) on CPU 1, interleaved rep by rep, medians of REPS. Both serve
# GET /plaintext ("Hello, World!"); over TLS both present the same ECDSA P-256 certificate and
# prefer the same suites. Writes bench/results/h2.md: the medians, then each pair of reps and
# how busy each server was (bench/pair_ratios.py).
#
# Scenarios (rate = requests per second; CPU = server utime+stime per request):
#   h2c_c100_m10    h2load -c100 -m10, HTTP/2 with prior knowledge
#   h2c_c1000_m1    h2load -c1000 -m1
#   h2_c100_m10     the same over TLS (ALPN h2; the handshakes fall in the warm-up)
#   h2_c1000_m1
#
# QUOTA=0.5 caps each server at that fraction of a core (bench/lib.sh cap_cpu; root): one
# client core cannot keep a server core busy, and under a cap both servers are the ceiling.
#
#   bash bench/h2.sh                        # REPS=3 DURATION=8
#   QUOTA=0.5 REPS=5 bash bench/h2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
QUOTA=${QUOTA:-}
HF_PORT=${HF_PORT:-18450}
HF_TLS_PORT=${HF_TLS_PORT:-18451}
NG_PORT=${NG_PORT:-18452}
NG_TLS_PORT=${NG_TLS_PORT:-18453}
WORK=$(mktemp -d /tmp/holdfast-h2-bench.XXXXXX)
OUT=bench/results/h2.md
mkdir -p bench/results

for tool in h2load nginx openssl; do
  command -v $tool >/dev/null ||
    { echo "$tool is not installed (apt-get install nghttp2-client nginx-light openssl)"; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p holdfast
HF=target/release/holdfast

# shellcheck source=bench/lib.sh
source bench/lib.sh
make_cert
sed -e "s#__DIR__#$WORK#g" -e "s#__PORT__#$NG_PORT#g" -e "s#__TLS_PORT__#$NG_TLS_PORT#g" \
  bench/nginx-h2.conf > "$WORK/nginx.conf"
mkdir -p "$WORK/body"

taskset -c 0 "$HF" serve --set server.listen=127.0.0.1:$HF_PORT --set server.tls_listen=127.0.0.1:$HF_TLS_PORT \
  --set server.workers=1 --set http.keepalive_requests=1000000 --set 'tls.alpn=["h2", "http/1.1"]' \
  --set tls.cert="$WORK/cert.pem" --set tls.key="$WORK/key.pem" 2>"$WORK/holdfast.log" &
HF_PID=$!
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK" &
NG_PID=$!
wait_both_up -skf "https://127.0.0.1:$HF_TLS_PORT/plaintext" "https://127.0.0.1:$NG_TLS_PORT/plaintext"
if [ -n "$QUOTA" ]; then
  cap_cpu holdfast "$QUOTA" "$HF_PID"
  cap_cpu nginx "$QUOTA" "$NG_PID" "$NG_WORKER"
fi

# h2load_run URL CLIENTS STREAMS -> "requests seconds", over the measured DURATION (after the
# warm-up, in which connections and handshakes are made). Fails on any failed request.
h2load_run() {
  local out ok failed secs
  out=$(taskset -c 1 h2load -t1 -c"$2" -m"$3" -D "$DURATION" --warm-up-time="$WARMUP" "$1" 2>&1)
  ok=$(echo "$out" | awk '/^requests:/ {print $8}')
  failed=$(echo "$out" | awk '/^requests:/ {print $10}')
  secs=$(echo "$out" | awk '/^finished in/ {sub(/s,/, "", $3); print $3}')
  if [ "${failed:-1}" != 0 ] || [ -z "$ok" ]; then echo "h2load failed: $out" >&2; exit 1; fi
  echo "$ok $secs"
}

# run PID PLAIN_PORT TLS_PORT SCENARIO -> "rate_per_s cpu_us_per_request". The CPU is read
# around the whole h2load run, warm-up included, and divided by the measured requests: the
# warm-up's requests are not counted, so the figure leans against the server that serves more
# of them in its warm-up (both get the same warm-up).
run() {
  local pid=$1 plain=$2 tls=$3 sc=$4 before after r
  before=$(cpu_ticks "$pid")
  case $sc in
    h2c_c100_m10) r=$(h2load_run "http://127.0.0.1:$plain/plaintext" 100 10) ;;
    h2c_c1000_m1) r=$(h2load_run "http://127.0.0.1:$plain/plaintext" 1000 1) ;;
    h2_c100_m10) r=$(h2load_run "https://127.0.0.1:$tls/plaintext" 100 10) ;;
    h2_c1000_m1) r=$(h2load_run "https://127.0.0.1:$tls/plaintext" 1000 1) ;;
  esac
  after=$(cpu_ticks "$pid")
  per_unit "$r" "$before" "$after"
}

read -r -a SCENARIOS <<<"${SCENARIOS:-h2c_c100_m10 h2c_c1000_m1 h2_c100_m10 h2_c1000_m1}"
declare -A RES
for rep in $(seq "$REPS"); do
  for sc in "${SCENARIOS[@]}"; do
    if [ $((rep % 2)) -eq 1 ]; then order="nginx holdfast"; else order="holdfast nginx"; fi
    for srv in $order; do
      if [ "$srv" = nginx ]; then r=$(run "$NG_WORKER" "$NG_PORT" "$NG_TLS_PORT" "$sc");
      else r=$(run "$HF_PID" "$HF_PORT" "$HF_TLS_PORT" "$sc"); fi
      RES[$srv,$sc]+="$r"$'\n'
      echo "rep $rep $sc $srv: $r per s, us-cpu each" | tee -a "$WORK/reps" >&2
    done
  done
done

{
  echo "### HTTP/2, h2load on CPU 1, server one worker (CPU 0${QUOTA:+, capped at $QUOTA of it}), ${DURATION}s (after ${WARMUP}s warm-up) x $REPS reps, medians"
  echo
  echo "$(machine_line), $(h2load --version 2>/dev/null | head -1); command: \`${QUOTA:+QUOTA=$QUOTA }SCENARIOS=\"${SCENARIOS[*]}\" REPS=$REPS DURATION=$DURATION bash bench/h2.sh\`"
  echo
  echo "| scenario | nginx req/s | holdfast req/s | ratio | nginx µs CPU each | holdfast µs CPU each | requests per CPU-second ratio (holdfast/nginx) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for sc in "${SCENARIOS[@]}"; do
    table_row "$sc" "${RES[nginx,$sc]}" "${RES[holdfast,$sc]}"
  done
  echo
  python3 bench/pair_ratios.py <"$WORK/reps"
} | tee "$OUT"
