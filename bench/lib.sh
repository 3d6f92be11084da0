# Shared by the benchmark scripts (sourced, not run): server clean-up, CPU accounting, medians,
# the machine line and the comparison table row. Expects HF_PID, NG_PID and WORK in the caller.

HF_PID=""; NG_PID=""; CGROUPS=()
cleanup() {
  [ -n "$HF_PID" ] && kill "$HF_PID" 2>/dev/null || true
  [ -n "$NG_PID" ] && kill "$NG_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  for cg in "${CGROUPS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# utime+stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# per_unit "UNITS SECONDS" TICKS_BEFORE TICKS_AFTER: "rate_per_s cpu_us_per_unit" of a run
# that did UNITS in SECONDS while its server used the CPU between the two readings.
per_unit() {
  local r=$1
  awk -v n="${r% *}" -v s="${r#* }" -v t="$(($3 - $2))" -v hz="$TICK" \
    'BEGIN { printf "%.0f %.2f\n", (s > 0 ? n / s : 0), (n > 0 ? t / hz * 1e6 / n : 0) }'
}

# An ECDSA P-256 certificate for localhost and 127.0.0.1, $WORK/cert.pem and $WORK/key.pem:
# what both servers of a TLS comparison present.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Waits until both URLs answer (curl flags in $1), then sets NG_WORKER: nginx's master forks
# the worker, which is the process that serves and is measured.
wait_both_up() {
  local flags=$1 hf_url=$2 ng_url=$3
  for _ in $(seq 50); do
    curl "$flags" "$hf_url" >/dev/null && curl "$flags" "$ng_url" >/dev/null && break
    sleep 0.1
  done
  NG_WORKER=$(pgrep -P "$NG_PID" | head -1)
}

machine_line() {
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(date -u +%Y-%m-%d); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
}

# table_row NAME NGINX_RESULTS HOLDFAST_RESULTS: each results argument holds lines of
# "rate cpu_us"; prints the medians and both ratios as a Markdown row.
table_row() {
  local ng_r hf_r ng_c hf_c
  ng_r=$(printf "%s" "$2" | awk '{print $1}' | median)
  hf_r=$(printf "%s" "$3" | awk '{print $1}' | median)
  ng_c=$(printf "%s" "$2" | awk '{print $2}' | median)
  hf_c=$(printf "%s" "$3" | awk '{print $2}' | median)
  awk -v n="$1" -v a="$ng_r" -v b="$hf_r" -v c="$ng_c" -v d="$hf_c" \
    'BEGIN { printf "| %s | %d | %d | %.2f× | %.2f | %.2f | %.2f× |\n", n, a, b, (a > 0 ? b/a : 0), c, d, (d > 0 ? c/d : 0) }'
}

# cap_cpu NAME FRACTION PID...: moves the processes into a cgroup of their own whose CFS quota
# is FRACTION of one core (cgroup v1 `cpu` or v2 with the cpu controller; needs root). For a
# server that its client cannot keep busy: capped below what the client can feed, the server
# is the ceiling and its rate is its own. The cgroup is removed at exit; its path is left in CG
# so that processes started later can join it (`echo PID >"$CG/cgroup.procs"`).
cap_cpu() {
  local name=$1 fraction=$2 quota pid
  shift 2
  quota=$(awk -v f="$fraction" 'BEGIN { printf "%d", f * 100000 }')
  if [ -w /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    CG=/sys/fs/cgroup/cpu/holdfast-bench-$name-$$
    mkdir "$CG" && echo 100000 >"$CG/cpu.cfs_period_us" && echo "$quota" >"$CG/cpu.cfs_quota_us"
  elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    CG=/sys/fs/cgroup/holdfast-bench-$name-$$
    mkdir "$CG" && echo "$quota 100000" >"$CG/cpu.max"
  else
    echo "QUOTA needs a writable cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 with +cpu), as root" >&2
    exit 1
  fi
  CGROUPS+=("$CG")
  for pid in "$@"; do echo "$pid" >"$CG/cgroup.procs"; done
}
