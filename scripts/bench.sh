#!/usr/bin/env bash
# The issue-4 bench: Mpps per core at 64 B and 1,460 B with 1, 10k and 1M flows, connections per second per
# core pair, and bytes of state per flow, each beside an L2-forward baseline run on the same generator and
# links. Release build; one second per measurement unless told otherwise.
#
#   scripts/bench.sh                      # flows 1,10000,1000000, 1 s per figure (about a minute, 3.5 GB RSS at 1M)
#   BENCH_FLOWS=1,10000 BENCH_SECS=3 scripts/bench.sh
#   BENCH_NIC_RX_CHECKSUM=1 scripts/bench.sh   # the cores trust received checksums, as behind a NIC
#   scripts/bench.sh --criterion          # also the criterion micro-benches (wire, tcp, flow, port, replication)
#
# Figures are per core: each core's time is measured around its own step calls in a one-thread run on a
# virtual clock, corrected for preemption; on a shared machine compare the ratios, not the absolutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
flows="${BENCH_FLOWS:-1,10000,1000000}"
secs="${BENCH_SECS:-1}"
buffer="${BENCH_BUFFER:-16384}"
extra=()
[[ -n "${BENCH_NIC_RX_CHECKSUM:-}" ]] && extra+=(--nic-rx-checksum)

cargo build --release -q -p holdfast-benches --bin pipeline
target="${CARGO_TARGET_DIR:-target}"
echo "== pipeline: flows $flows, $secs s per figure, buffers $buffer B ($(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$target/release/pipeline" "${extra[@]}" --flows "$flows" --secs "$secs" --buffer "$buffer"

if [[ "${1:-}" == "--criterion" ]]; then
    echo
    echo "== criterion micro-benches (short measurement)"
    cargo bench -q -p holdfast-benches -- --warm-up-time 0.5 --measurement-time 1 2>&1 | grep -E "^[a-z_/0-9 ]+time:|thrpt:" || true
fi
