#!/usr/bin/env bash
# The one command that runs holdfast's tests: formatting, lints, every crate's tests, and a bounded fuzz run
# of every parser. Tests that need root (network namespaces, AF_PACKET) skip with a message when not root.
#
#   bash scripts/test.sh                 # everything
#   HOLDFAST_FUZZ_SECONDS=0 bash scripts/test.sh   # skip fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds=${HOLDFAST_FUZZ_SECONDS:-30}

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test --workspace"
cargo test --workspace

if [ "$fuzz_seconds" != 0 ] && [ -d fuzz ]; then
  if cargo fuzz --help >/dev/null 2>&1; then
    echo "== fuzz: every target for ${fuzz_seconds}s"
    bash scripts/fuzz.sh "$fuzz_seconds"
  else
    echo "== fuzz: skipped (cargo-fuzz is not installed; .ci/run installs it)"
  fi
fi
echo "== all tests passed"
