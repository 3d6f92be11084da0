#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time from the seed corpus; fails if any
# finds a crash (a panic: a failed check) or a hang. See README.md here.
#
#   fuzz/ci.sh                       # 30 s per target
#   FUZZ_SECONDS=300 fuzz/ci.sh      # longer
#   FUZZ_TARGETS="http_head chunked" fuzz/ci.sh
#   FUZZ_SANITIZER=address fuzz/ci.sh  # with ASan (slower; the default is none)
#
# Works from a clean clone: installs cargo-fuzz when missing, and creates the corpus, artifact
# and log directories. What a run adds to fuzz/corpus/<target>/ is kept for the next run;
# crashes go to fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-none}
targets=${FUZZ_TARGETS:-"http_head chunked ws_frames http1_conn ws_conn channels h2_conn"}
# One input running longer than this is a hang, and a failure.
input_timeout=${FUZZ_INPUT_TIMEOUT:-20}

if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a positive whole number of seconds, not '$seconds'" >&2
    exit 2
fi

# cargo-fuzz needs a nightly compiler's unstable flags. Use the nightly toolchain when there is
# one; otherwise (a machine with a single stable toolchain, as CI's is) the stable compiler with
# RUSTC_BOOTSTRAP=1, which unlocks the same flags. Only the fuzz build sees it.
if cargo +nightly --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
else
    echo "no nightly toolchain: building the fuzz targets with $(rustc --version) and RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
fi
# The connection targets allocate deflate contexts and buffers of a few hundred KiB per input;
# with glibc's defaults each is a fresh mmap, zeroed and unmapped every run, which halved their
# speed. Keep such blocks on the heap (as the README's ten-million runs of them were).
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The seeds still decode as intended (a change to an input type fails here, not silently).
"${cargo[@]}" test --lib --quiet

"${cargo[@]}" fuzz build --sanitizer "$sanitizer"

mkdir -p logs
failed=()
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    echo "== $t: ${seconds}s, sanitizer $sanitizer"
    # New inputs are written to the first directory; the seeds are only read. libFuzzer stops
    # itself after max_total_time; `timeout` is the backstop should it not (a minute's grace for
    # loading the corpus and the final report).
    status=0
    timeout --kill-after=10 $((seconds + 60)) \
        "${cargo[@]}" fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || status=$?
    after=$(find "artifacts/$t" -type f | wc -l)
    grep -E '^#[0-9]+\s+DONE|^stat::(number_of_executed_units|average_exec_per_sec)' "logs/$t.log" || true
    if [[ $status -ne 0 || $after -ne $before ]]; then
        echo "!! $t failed (exit $status); see fuzz/logs/$t.log and fuzz/artifacts/$t/" >&2
        grep -E -m5 'panicked|ERROR|SUMMARY|artifact_prefix.*Test unit written' "logs/$t.log" >&2 || true
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "fuzzing failed: ${failed[*]}" >&2
    echo "reproduce: cd fuzz && ${cargo[*]} fuzz run --sanitizer $sanitizer <target> artifacts/<target>/<file>" >&2
    exit 1
fi
echo "fuzzing passed: $targets (${seconds}s each)"
