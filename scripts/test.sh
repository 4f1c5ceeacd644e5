#!/usr/bin/env bash
# The one command that runs holdfast's tests: formatting, lints, every crate's tests, the NIC backends'
# tests when their packages are installed, and a bounded fuzz run of every parser. Tests that need root
# (network namespaces, AF_PACKET, AF_XDP, DPDK) skip with a message when not run as root.
#
#   bash scripts/test.sh                          # everything
#   HOLDFAST_FUZZ_SECONDS=0 bash scripts/test.sh  # no fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds=${HOLDFAST_FUZZ_SECONDS:-20}

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test --workspace"
cargo test --workspace

# The 10,000-flow simulation and the demo-sized stall bound are too slow unoptimized; they run here, optimized.
echo "== cargo test --release -p control --test sim_scale --test sim_stall"
cargo test --release -p control --test sim_scale --test sim_stall

# A seeded failover sweep: small topologies, the primary dying at a different moment each time (a share of
# the seeds kill the standby or cut the replication link instead). HOLDFAST_SWEEP_SEEDS sets how many
# (1,000 by default, about a minute of CPU; 0 skips it); every failing seed is printed with its report and
# replays alone with `holdfast sweep --first SEED --seeds 1`.
sweep_seeds=${HOLDFAST_SWEEP_SEEDS:-1000}
if [ "$sweep_seeds" != 0 ]; then
  echo "== holdfast sweep --seeds $sweep_seeds"
  sweep_out=$(mktemp)
  if ! cargo run --release -q -p control --bin holdfast -- sweep --seeds "$sweep_seeds" > "$sweep_out"; then
    grep '"report"' "$sweep_out" || true
    tail -n 1 "$sweep_out"
    rm -f "$sweep_out"
    echo "holdfast sweep: failing seeds above (replay one with: holdfast sweep --first SEED --seeds 1)"
    exit 1
  fi
  tail -n 1 "$sweep_out"
  rm -f "$sweep_out"
fi

# The AF_XDP and DPDK backends are cargo features: build, lint and test them when their system packages are
# there (scripts/install-nic-deps.sh installs them; .ci/run does).
if [ "${HOLDFAST_NIC_FEATURES:-0}" = 1 ] || { pkg-config --exists libdpdk 2>/dev/null && command -v clang >/dev/null; }; then
  echo "== NIC backends: clippy and tests with --features dataplane/dpdk,dataplane/afxdp"
  cargo clippy -p dataplane -p holdfast-dpdk-sys --all-targets --features dataplane/dpdk,dataplane/afxdp -- -D warnings
  cargo test -p dataplane --features dpdk,afxdp --test nic_dpdk --test nic_afxdp
  cargo test -p holdfast-dpdk-sys
  # A primary kill with Linux peers, every data port on AF_XDP, then on DPDK (root only; skips otherwise).
  cargo test -p control --features afxdp,dpdk --test netns_failover nic_
else
  echo "== NIC backends: skipped (run scripts/install-nic-deps.sh as root to build and test them)"
fi

if [ "$fuzz_seconds" != 0 ] && [ -d fuzz ]; then
  if cargo fuzz --help >/dev/null 2>&1; then
    echo "== fuzz: every target for ${fuzz_seconds}s"
    bash scripts/fuzz.sh "$fuzz_seconds"
  else
    echo "== fuzz: skipped (cargo-fuzz is not installed; .ci/run installs it)"
  fi
fi
echo "== all tests passed"
