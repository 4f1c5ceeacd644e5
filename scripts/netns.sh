#!/usr/bin/env bash
# holdfast test topology in network namespaces: up | down | status.
#
#   hf-client (eth0 198.18.1.10/24) ─┐                      ┌─ hf-server (eth0 198.18.2.10/24)
#                                    │  hf-sw               │
#                             br-client ── c-*   s-* ── br-server
#                                    │                      │
#   hf-primary: client0 ─────────────┤                      ├──────────── server0
#               repl0 ── (direct veth) ── repl0 :hf-standby
#   hf-standby: client0 ─────────────┘                      └──────────── server0
#
# The primary's and standby's ports carry no kernel address: holdfast owns them, and with them the VIP
# 198.18.1.1 (client LAN) and the SNAT address 198.18.2.1 (server LAN). No default routes, IPv6 off,
# offloads off (a user-space stack wants MTU-sized frames). Nothing is created in the root namespace.
#
# `up` is idempotent (a complete topology is left alone; a partial one is rebuilt) and cleans up after
# itself when a step fails. `down` removes everything and succeeds when there is nothing to remove.
# `status` prints what exists and exits 0 when the topology is complete, 1 when partial, 2 when absent.
#
# HF_PREFIX (default "hf") renames the namespaces, so that two copies can coexist (tests use their own).

set -Eeuo pipefail

P="${HF_PREFIX:-hf}"
NS_CLIENT="$P-client"
NS_SERVER="$P-server"
NS_PRIMARY="$P-primary"
NS_STANDBY="$P-standby"
NS_SW="$P-sw"
ALL_NS=("$NS_CLIENT" "$NS_SERVER" "$NS_PRIMARY" "$NS_STANDBY" "$NS_SW")

CLIENT_ADDR=198.18.1.10/24
SERVER_ADDR=198.18.2.10/24
VIP=198.18.1.1
SNAT=198.18.2.1

# namespace:interface pairs that must exist when the topology is up.
EXPECTED=(
  "$NS_SW:br-client" "$NS_SW:br-server"
  "$NS_SW:c-client" "$NS_SW:c-primary" "$NS_SW:c-standby"
  "$NS_SW:s-server" "$NS_SW:s-primary" "$NS_SW:s-standby"
  "$NS_CLIENT:eth0" "$NS_SERVER:eth0"
  "$NS_PRIMARY:client0" "$NS_PRIMARY:server0" "$NS_PRIMARY:repl0"
  "$NS_STANDBY:client0" "$NS_STANDBY:server0" "$NS_STANDBY:repl0"
)

die() { echo "netns.sh: $*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install --no-install-recommends $2)"
}

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

dev_exists() { ip -n "$1" link show dev "$2" >/dev/null 2>&1; }

# Counts the expected pieces present: prints "present total".
census() {
  local present=0 total=0 ns pair
  for ns in "${ALL_NS[@]}"; do
    total=$((total + 1))
    ns_exists "$ns" && present=$((present + 1))
  done
  for pair in "${EXPECTED[@]}"; do
    total=$((total + 1))
    ns_exists "${pair%%:*}" && dev_exists "${pair%%:*}" "${pair#*:}" && present=$((present + 1))
  done
  echo "$present $total"
}

down() {
  local ns
  for ns in "${ALL_NS[@]}"; do
    if ns_exists "$ns"; then
      # Deleting a namespace deletes its veth ends, and with them their peers in other namespaces.
      ip netns del "$ns"
    fi
  done
}

quiet_ns() {
  local ns=$1
  ip netns add "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
}

offloads_off() {
  ip netns exec "$1" ethtool -K "$2" gro off gso off tso off tx off rx off >/dev/null 2>&1 ||
    ip netns exec "$1" ethtool -K "$2" gro off gso off tso off tx off rx off
}

# veth NS_A DEV_A NS_B DEV_B: a veth pair straight between two namespaces, offloads off, both ends up.
veth() {
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  offloads_off "$1" "$2"
  offloads_off "$3" "$4"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

up() {
  read -r present total < <(census)
  if [ "$present" -eq "$total" ]; then
    echo "netns.sh: topology $P already up"
    return 0
  fi
  if [ "$present" -gt 0 ]; then
    echo "netns.sh: partial topology ($present/$total), rebuilding"
    down
  fi
  trap 'echo "netns.sh: up failed, cleaning up" >&2; down' ERR

  for ns in "${ALL_NS[@]}"; do quiet_ns "$ns"; done

  for br in br-client br-server; do
    # No STP, no forwarding delay: the bridge forwards and learns from the first frame, so a takeover's
    # gratuitous ARP moves the address at once.
    ip -n "$NS_SW" link add "$br" type bridge stp_state 0 forward_delay 0
    ip -n "$NS_SW" link set "$br" up
  done

  veth "$NS_CLIENT" eth0 "$NS_SW" c-client
  veth "$NS_SERVER" eth0 "$NS_SW" s-server
  for box in primary standby; do
    local ns="$P-$box"
    veth "$ns" client0 "$NS_SW" "c-$box"
    veth "$ns" server0 "$NS_SW" "s-$box"
  done
  veth "$NS_PRIMARY" repl0 "$NS_STANDBY" repl0

  for dev in c-client c-primary c-standby; do ip -n "$NS_SW" link set "$dev" master br-client; done
  for dev in s-server s-primary s-standby; do ip -n "$NS_SW" link set "$dev" master br-server; done

  ip -n "$NS_CLIENT" addr add "$CLIENT_ADDR" dev eth0
  ip -n "$NS_SERVER" addr add "$SERVER_ADDR" dev eth0

  trap - ERR
  read -r present total < <(census)
  [ "$present" -eq "$total" ] || { down; die "topology incomplete after up ($present/$total)"; }
  echo "netns.sh: topology $P up: client $CLIENT_ADDR, VIP $VIP, server $SERVER_ADDR, SNAT $SNAT"
}

status() {
  local ns
  read -r present total < <(census)
  for ns in "${ALL_NS[@]}"; do
    if ns_exists "$ns"; then
      echo "== $ns"
      ip -n "$ns" -brief link show | grep -v '^lo ' || true
      ip -n "$ns" -brief -4 addr show | grep -v '^lo ' || true
    else
      echo "== $ns (absent)"
    fi
  done
  if [ "$present" -eq "$total" ]; then
    echo "topology $P: up"
    return 0
  elif [ "$present" -gt 0 ]; then
    echo "topology $P: partial ($present/$total)"
    return 1
  fi
  echo "topology $P: down"
  return 2
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
need ip iproute2
need ethtool ethtool

case "${1:-}" in
  up) up ;;
  down) down; echo "netns.sh: topology $P down" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
