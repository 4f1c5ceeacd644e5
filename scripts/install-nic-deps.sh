#!/usr/bin/env bash
# Installs the Debian packages that holdfast's optional NIC backends need to build and be tested:
#   dpdk  feature: libdpdk-dev (DPDK 22.11) and pkg-config, which finds it;
#   afxdp feature: m4, clang, libelf-dev, zlib1g-dev (xsk-rs builds libbpf/libxdp with them: use_cc_build);
#   tests of both: iproute2 (ip netns, veth) and ethtool (offloads off on the test veths).
# Idempotent: packages already installed are not fetched again, and apt-get update runs only when needed.
# Usage (as root): scripts/install-nic-deps.sh        Exit status is 0 when everything is installed.
set -euo pipefail

PKGS=(libdpdk-dev pkg-config m4 clang libelf-dev zlib1g-dev iproute2 ethtool)

if [[ $(id -u) -ne 0 ]]; then
    echo "install-nic-deps: must run as root (apt-get install)" >&2
    exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-nic-deps: all present (${PKGS[*]})"
else
    echo "install-nic-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be absent in a fresh container; a failed install is retried once after an update.
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    fi
fi

# libxdp loads its XDP program through bpffs when it is mounted (otherwise it warns "No bpffs found" and
# loads a single program without the dispatcher, which also works). Mount it when possible; not fatal.
if [[ -d /sys/fs/bpf ]] && ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "install-nic-deps: could not mount bpffs on /sys/fs/bpf (not fatal)"
fi

pkg-config --modversion libdpdk >/dev/null && echo "install-nic-deps: libdpdk $(pkg-config --modversion libdpdk)"
