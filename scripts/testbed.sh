# shellcheck shell=bash
# holdfast's namespace test bed, as functions for the scripts that drive Linux peers through a real box
# (scripts/linux-peers.sh, scripts/failover.sh). Source it; it sets nothing up by itself.
#
#   tb_init PREFIX      work directory, cleanup trap (namespaces, every process started here, nft tables)
#   tb_up               scripts/netns.sh up with HF_PREFIX=PREFIX
#   tb_config FILE POLICY [ROLE]   a box config for the topology: listeners stream 7000, iperf 5201, http 80
#   tb_primary POLICY   writes the primary's config and starts `holdfast run` in the primary namespace
#   tb_loss PERMILLE    drops that share of frames forwarded by both bridges (nftables in the switch namespace)
#   tb_bg NS LOG CMD... starts CMD in namespace NS in the background; its pid is killed at cleanup
#
# Processes are found again by the pid `ip netns exec` started (it execs into the command), never by name:
# other copies of the test bed may run on the same machine under other prefixes.

TB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TB_PY=/usr/bin/python3
TB_STREAM="$TB_ROOT/scripts/hfstream.py"
TB_VIP=198.18.1.1
TB_SNAT=198.18.2.1
TB_CLIENT=198.18.1.10
TB_SERVER=198.18.2.10
TB_PIDS=()

tb_log() { echo "testbed[$TB_PREFIX]: $*" >&2; }

tb_init() {
  TB_PREFIX=$1
  [ "$(id -u)" -eq 0 ] || { echo "testbed: must run as root" >&2; exit 77; }
  TB_DIR=$(mktemp -d "/tmp/$TB_PREFIX-testbed.XXXXXX")
  # nginx's workers run as www-data and read the files served from here.
  chmod 0755 "$TB_DIR"
  TB_KEEP=${HF_KEEP:-0}
  HOLDFAST_BIN=${HOLDFAST_BIN:-$TB_ROOT/target/debug/holdfast}
  [ -x "$HOLDFAST_BIN" ] || { echo "testbed: $HOLDFAST_BIN not built (cargo build -p control)" >&2; exit 1; }
  trap tb_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

tb_cleanup() {
  local rc=$? pid
  for pid in "${TB_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${TB_PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  HF_PREFIX=$TB_PREFIX bash "$TB_ROOT/scripts/netns.sh" down >/dev/null 2>&1 || true
  # DPDK's runtime files of the boxes' EALs (--file-prefix=PREFIX-ROLE), left behind by a kill -9.
  rm -rf "/var/run/dpdk/$TB_PREFIX-primary" "/var/run/dpdk/$TB_PREFIX-standby"
  if [ "$rc" -ne 0 ] || [ "$TB_KEEP" = 1 ]; then
    tb_log "logs kept in $TB_DIR"
    for f in "$TB_DIR"/*.log; do
      [ -s "$f" ] || continue
      echo "---- $f (tail)" >&2
      tail -n 15 "$f" >&2
    done
  else
    rm -rf "$TB_DIR"
  fi
  exit "$rc"
}

tb_up() {
  HF_PREFIX=$TB_PREFIX bash "$TB_ROOT/scripts/netns.sh" up >&2
}

# tb_bg NS LOG CMD...: runs CMD in namespace NS, stdout and stderr to LOG; sets TB_LAST_PID.
tb_bg() {
  local ns=$1 log=$2
  shift 2
  ip netns exec "$ns" "$@" >"$log" 2>&1 &
  TB_LAST_PID=$!
  TB_PIDS+=("$TB_LAST_PID")
}

# tb_config FILE POLICY [ROLE [PORT_BACKEND]]: with TB_REPLICATION=1, a replication port (repl0) and a
# [replication] section too (a standby needs them; a primary with them expects a standby).
tb_config() {
  local file=$1 policy=$2 role=${3:-primary} backend=${4:-afpacket} l repl_backend
  repl_backend=$backend
  [ "$backend" = dpdk ] && repl_backend=afpacket
  {
    cat <<EOF
# Written by scripts/testbed.sh for topology $TB_PREFIX.
[box]
name = "$TB_PREFIX-$role"
role = "$role"
epoch_file = "$TB_DIR/$role.epoch"

[ports.client]
backend = "$backend"
interface = "client0"
EOF
    if [ "$backend" = dpdk ]; then
      # One EAL per box (its own --file-prefix, no hugepages, no PCI scan); each veth through DPDK's
      # af_packet virtual device. The shared options are given once, on the first port.
      echo "eal_args = [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--file-prefix=$TB_PREFIX-$role\"," \
        "\"--log-level=lib.eal:error\", \"--vdev=net_af_packet0,iface=client0\"]"
    fi
    cat <<EOF

[ports.server]
backend = "$backend"
interface = "server0"
EOF
    if [ "$backend" = dpdk ]; then
      echo 'eal_args = ["--vdev=net_af_packet1,iface=server0"]'
    fi
    if [ "${TB_REPLICATION:-0}" = 1 ]; then
      cat <<EOF

[ports.replication]
# DPDK boxes keep their replication link on AF_PACKET (a port of its own; mixing backends is fine).
backend = "$repl_backend"
interface = "repl0"

[replication]
heartbeat_interval_us = 5000
miss_threshold = 10
EOF
    fi
    cat <<EOF

[addresses]
vip = "$TB_VIP"
snat = "$TB_SNAT"
client_subnet = "198.18.1.0/24"
server_subnet = "198.18.2.0/24"
EOF
    # TB_VIRTUAL_MAC: both boxes answer for the VIP with this MAC (the switch relearns it on takeover).
    [ -z "${TB_VIRTUAL_MAC:-}" ] || echo "virtual_mac = \"$TB_VIRTUAL_MAC\""
    for l in stream:7000 iperf:5201 http:80; do
      cat <<EOF

[[listeners]]
name = "${l%%:*}"
port = ${l#*:}
backends = ["$TB_SERVER:${l#*:}"]
ack_policy = "$policy"

[listeners.health]
# Patient checks: on a loaded 2-core machine a probe's answer can take a while, and a backend marked down
# turns every new client into a RST. The test bed starts backends before the box, so rise hardly matters.
interval_ms = 500
timeout_ms = 500
rise = 1
fall = 5
EOF
    done
    cat <<EOF

[cores]
poll = "adaptive"

[control]
socket = "$TB_DIR/$role.sock"

[log]
level = "${HF_LOG:-info}"
EOF
  } >"$file"
  "$HOLDFAST_BIN" check-config "$file" >/dev/null
}

# tb_box ROLE POLICY [PORT_BACKEND]: writes ROLE's config and starts `holdfast run` in ROLE's namespace;
# sets TB_BOX_PID. Fails, with holdfast's own last words in TB_BOX_ERROR, when the box does not come up.
tb_box() {
  local role=$1 policy=$2 backend=${3:-afpacket} log pid
  log="$TB_DIR/$role.log"
  TB_BOX_ERROR=
  if ! tb_config "$TB_DIR/$role.toml" "$policy" "$role" "$backend" 2>"$log.config"; then
    TB_BOX_ERROR="config: $(tail -n 1 "$log.config")"
    return 1
  fi
  tb_bg "$TB_PREFIX-$role" "$log" "$HOLDFAST_BIN" run --config "$TB_DIR/$role.toml"
  pid=$TB_LAST_PID
  TB_BOX_PID=$pid
  for _ in $(seq 1 50); do
    grep -qE "serving|standby: watching" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  TB_BOX_ERROR=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
  [ -n "$TB_BOX_ERROR" ] || TB_BOX_ERROR="holdfast did not report serving within 5 s"
  return 1
}

# tb_primary POLICY [PORT_BACKEND]: starts the primary; sets TB_PRIMARY_PID.
tb_primary() {
  if tb_box primary "$@"; then
    TB_PRIMARY_PID=$TB_BOX_PID
    return 0
  fi
  tb_log "the primary did not start: $TB_BOX_ERROR"
  return 1
}

# tb_wait_listen NS PORT: waits until something listens on PORT in namespace NS.
tb_wait_listen() {
  local i
  for i in $(seq 1 100); do
    ip netns exec "$1" ss -Hltn "sport = :$2" | grep -q LISTEN && return 0
    sleep 0.05
  done
  tb_log "nothing listens on port $2 in $1"
  return 1
}

# tb_wait_vip PORT: waits until the box accepts connections on VIP:PORT (its health checks found the backend).
tb_wait_vip() {
  local i
  for i in $(seq 1 50); do
    # A bare connect and close: counted by no test server (iperf3 and hfstream are started after, or
    # ignore it), answered with a RST by the box while the backend is down.
    if ip netns exec "$TB_PREFIX-client" timeout 2 bash -c "exec 3<>/dev/tcp/$TB_VIP/$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  tb_log "the box does not accept on $TB_VIP:$1"
  return 1
}

# tb_loss PERMILLE: random loss on everything both bridges forward (0 removes it).
tb_loss() {
  local ns="$TB_PREFIX-sw"
  ip netns exec "$ns" nft delete table bridge hf_loss 2>/dev/null || true
  [ "$1" -gt 0 ] || return 0
  ip netns exec "$ns" nft -f - <<EOF
table bridge hf_loss {
  chain drop_some {
    type filter hook forward priority 0; policy accept;
    numgen random mod 1000 < $1 counter drop
  }
}
EOF
}

# tb_loss_count: frames dropped so far by tb_loss.
tb_loss_count() {
  ip netns exec "$TB_PREFIX-sw" nft list table bridge hf_loss 2>/dev/null |
    sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -n 1 | grep . || echo 0
}

# tb_nginx: nginx serving $TB_DIR/www on TB_SERVER:80 with its own config and temp dirs.
tb_nginx() {
  local d="$TB_DIR/nginx"
  mkdir -p "$d/www" "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 256; }
http {
  access_log $d/access.log;
  client_body_temp_path $d/tmp;
  proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp;
  scgi_temp_path $d/tmp;
  server {
    listen $TB_SERVER:80;
    root $d/www;
    # An upload is read whole and answered with its length, so the client knows it all arrived.
    location = /upload {
      client_max_body_size 64m;
      client_body_buffer_size 64m;
      return 200 "\$request_length\n";
    }
  }
}
EOF
  tb_bg "$TB_PREFIX-server" "$TB_DIR/nginx.log" nginx -c "$d/nginx.conf" -e "$d/error.log"
  tb_wait_listen "$TB_PREFIX-server" 80
}
