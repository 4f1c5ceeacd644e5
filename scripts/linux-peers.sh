#!/usr/bin/env bash
# Linux TCP peers through a real holdfast primary in network namespaces: the checksummed stream tool
# (several connections, each way), curl against nginx, iperf3 both ways; optionally with random loss in the
# switch. Prints one JSON object and exits 0 when nothing was lost, duplicated or reset.
#
#   sudo scripts/linux-peers.sh [--prefix hfl] [--policy none|backend] [--loss PERMILLE]
#                               [--conns K] [--bytes PER_CONN] [--iperf-seconds S] [--tx-csum-offload]
#                               [--box-mtu MTU]
#
# --tx-csum-offload turns transmit checksum offload back on for the peers' and the switch's veths (the box's
# own ports then receive frames whose checksums the kernel left partial, as on any veth by default).
# --box-mtu gives the box's links (both ends of its client and server veths) a smaller MTU than the peers'
# 1500: the box must advertise an MSS that fits its own ports.
#
# HOLDFAST_BIN picks the binary (default target/debug/holdfast); HF_KEEP=1 keeps the logs; HF_LOG sets
# the box's log level. Everything it creates (namespaces, processes, files) goes away when it exits,
# however it exits. Needs root, iproute2, ethtool, nftables, python3, nginx, curl, iperf3.

set -Eeuo pipefail
# shellcheck source=scripts/testbed.sh
source "$(dirname "$0")/testbed.sh"

prefix=hfl
policy=backend
loss=0
conns=4
bytes=4000000
iperf_s=3
tx_csum=0
box_mtu=""
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --loss) loss=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --bytes) bytes=$2; shift 2 ;;
    --iperf-seconds) iperf_s=$2; shift 2 ;;
    --tx-csum-offload) tx_csum=1; shift ;;
    --box-mtu) box_mtu=$2; shift 2 ;;
    *) echo "usage: $0 [--prefix P] [--policy none|backend] [--loss PERMILLE] [--conns K] [--bytes N] [--iperf-seconds S]" >&2; exit 64 ;;
  esac
done
for tool in ip ethtool nft nginx curl iperf3 "$TB_PY"; do
  command -v "$tool" >/dev/null || { echo "linux-peers: $tool not found" >&2; exit 77; }
done

tb_init "$prefix"
tb_up
C="$prefix-client"
S="$prefix-server"
if [ -n "$box_mtu" ]; then
  for x in "$prefix-sw c-primary" "$prefix-sw s-primary" "$prefix-primary client0" "$prefix-primary server0"; do
    # shellcheck disable=SC2086
    set -- $x
    ip -n "$1" link set dev "$2" mtu "$box_mtu"
  done
fi
if [ "$tx_csum" = 1 ]; then
  for x in "$C eth0" "$S eth0" "$prefix-sw c-client" "$prefix-sw s-server" "$prefix-sw c-primary" "$prefix-sw s-primary"; do
    # shellcheck disable=SC2086
    set -- $x
    ip netns exec "$1" ethtool -K "$2" tx on >/dev/null 2>&1
  done
fi

# Backends first, so the box's health checks find them up.
mkdir -p "$TB_DIR/nginx/www"
for f in small:20000 one:1000000 three:3000000; do
  head -c "${f#*:}" /dev/urandom >"$TB_DIR/nginx/www/${f%%:*}.bin"
done
head -c 2000000 /dev/urandom >"$TB_DIR/upload.bin"
tb_nginx
tb_bg "$S" "$TB_DIR/iperf3-server.log" iperf3 -s -B "$TB_SERVER"
tb_wait_listen "$S" 5201
# The stream server too: a backend that is not listening yet is marked down by the health checks, and the
# box refuses (RSTs) clients until the next check finds it up.
tb_bg "$S" "$TB_DIR/stream-server.json" "$TB_PY" "$TB_STREAM" server --listen "$TB_SERVER:7000" \
  --conns "$conns" --timeout 60
stream_server=$TB_LAST_PID
tb_wait_listen "$S" 7000

tb_primary "$policy"
tb_wait_vip 80
tb_loss "$loss"

# RSTs crossing the bridges, per service, health-check probes (source ports 60000-60999) excepted. The
# stream tool and nginx close cleanly, so any RST on their connections is a fault; iperf3 resets its data
# connection by design (the server closes it with the client's last bytes unread), so its count is only
# reported.
ip netns exec "$prefix-sw" nft -f - <<'EOF2'
table bridge hf_rst {
  chain count {
    type filter hook forward priority -10; policy accept;
    tcp sport 60000-60999 accept
    tcp dport 60000-60999 accept
    tcp flags & rst != rst accept
    tcp sport 7000 counter
    tcp dport 7000 counter
    tcp sport 80 counter
    tcp dport 80 counter
    tcp sport 5201 counter
    tcp dport 5201 counter
  }
}
EOF2

# HF_PCAP=1: frame headers on both bridges' peer ports, kept with the logs.
if [ "${HF_PCAP:-0}" = 1 ]; then
  tb_bg "$prefix-sw" "$TB_DIR/tcpdump-client.log" tcpdump -s 128 -w "$TB_DIR/client.pcap" -i c-client
  tb_bg "$prefix-sw" "$TB_DIR/tcpdump-server.log" tcpdump -s 128 -w "$TB_DIR/server.pcap" -i s-server
  sleep 0.5
fi

t0=$(date +%s%N)

# 1. Checksummed streams: every byte verified at the server and again in the echo at the client (the
# server was started with the other backends).
ip netns exec "$C" timeout 55 "$TB_PY" "$TB_STREAM" client --connect "$TB_VIP:7000" --conns "$conns" \
  --bytes "$bytes" --id-base 100 --timeout 45 >"$TB_DIR/stream-client.json" 2>"$TB_DIR/stream-client.log" || true
for _ in $(seq 1 100); do kill -0 "$stream_server" 2>/dev/null || break; sleep 0.1; done
stream=$("$TB_PY" "$TB_STREAM" combine "$TB_DIR/stream-client.json" "$TB_DIR/stream-server.json" 2>/dev/null ||
  echo '{"stream_ok": false, "error": "no report"}')

# 2. curl against nginx: downloads compared with the files, an upload, and short connections in a row.
curl_fail=0
curl_ok=0
for f in small one three; do
  if ip netns exec "$C" timeout 20 curl -fsS --max-time 15 -o "$TB_DIR/got-$f.bin" "http://$TB_VIP/$f.bin" \
    2>>"$TB_DIR/curl.log" && cmp -s "$TB_DIR/got-$f.bin" "$TB_DIR/nginx/www/$f.bin"; then
    curl_ok=$((curl_ok + 1))
  else
    curl_fail=$((curl_fail + 1))
    echo "download $f.bin failed or differs" >>"$TB_DIR/curl.log"
  fi
done
code=$(ip netns exec "$C" timeout 20 curl -fsS --max-time 15 -o /dev/null -w '%{http_code}' \
  --data-binary "@$TB_DIR/upload.bin" "http://$TB_VIP/upload" 2>>"$TB_DIR/curl.log" || echo fail)
if [ "$code" = 200 ]; then curl_ok=$((curl_ok + 1)); else curl_fail=$((curl_fail + 1)); echo "upload: $code" >>"$TB_DIR/curl.log"; fi
for i in $(seq 1 10); do
  # A box that fails one short connection likely fails them all: stop waiting after three.
  if [ "$curl_fail" -ge 3 ]; then curl_fail=$((curl_fail + 1)); continue; fi
  if ip netns exec "$C" timeout 10 curl -fsS --max-time 5 -o "$TB_DIR/got-small-$i.bin" "http://$TB_VIP/small.bin" \
    2>>"$TB_DIR/curl.log" && cmp -s "$TB_DIR/got-small-$i.bin" "$TB_DIR/nginx/www/small.bin"; then
    curl_ok=$((curl_ok + 1))
  else
    curl_fail=$((curl_fail + 1))
  fi
done

# 3. iperf3 each way.
iperf_json() { # DIRECTION_FLAG
  local out try
  for try in 1 2 3; do
    out=$(ip netns exec "$C" timeout $((iperf_s + 20)) iperf3 -c "$TB_VIP" -t "$iperf_s" -J "$@" 2>>"$TB_DIR/iperf3-client.log" || true)
    # The iperf3 server may still be closing the previous test (slow under loss): it answers "busy".
    case $out in *"server is busy"*) sleep 1 ;; *) break ;; esac
  done
  printf '%s\n' "$out"
}
iperf_fwd=$(iperf_json | "$TB_PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print(json.dumps({"error": "no output"})); sys.exit()
e = d.get("end", {})
print(json.dumps({"error": d.get("error"), "gbit_s": round(e.get("sum_received", {}).get("bits_per_second", 0) / 1e9, 3),
                  "bytes": e.get("sum_received", {}).get("bytes", 0), "retransmits": e.get("sum_sent", {}).get("retransmits")}))')
iperf_rev=$(iperf_json -R | "$TB_PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print(json.dumps({"error": "no output"})); sys.exit()
e = d.get("end", {})
print(json.dumps({"error": d.get("error"), "gbit_s": round(e.get("sum_received", {}).get("bits_per_second", 0) / 1e9, 3),
                  "bytes": e.get("sum_received", {}).get("bytes", 0), "retransmits": e.get("sum_sent", {}).get("retransmits")}))')

elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
primary_alive=true
kill -0 "$TB_PRIMARY_PID" 2>/dev/null || primary_alive=false
rsts=$(ip netns exec "$prefix-sw" nft list table bridge hf_rst | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | paste -sd, -)
dropped=$(tb_loss_count)

"$TB_PY" - "$policy" "$loss" "$dropped" "$curl_ok" "$curl_fail" "$elapsed_ms" "$primary_alive" "$rsts" \
  "$stream" "$iperf_fwd" "$iperf_rev" "$tx_csum" "$box_mtu" <<'EOF'
import json, sys
policy, loss, dropped, cok, cfail, ms, alive, rsts, stream, fwd, rev = sys.argv[1:12]
stream, fwd, rev = json.loads(stream), json.loads(fwd), json.loads(rev)
r = [int(x) for x in rsts.split(",") if x] + [0] * 6
out = {
    "policy": policy,
    "tx_csum_offload": sys.argv[12] == "1",
    "box_mtu": int(sys.argv[13]) if sys.argv[13] else None,
    "loss_permille": int(loss),
    "frames_dropped_by_switch": int(dropped),
    "stream": stream,
    "curl": {"ok": int(cok), "failed": int(cfail)},
    "iperf3": {"forward": fwd, "reverse": rev},
    # RST frames on either bridge (one the box relays counts on both).
    "rst_frames": {"stream": r[0] + r[1], "http": r[2] + r[3], "iperf3": r[4] + r[5]},
    "primary_alive": alive == "true",
    "elapsed_ms": int(ms),
}
out["bytes_lost"] = stream.get("bytes_lost")
out["bytes_duplicated"] = stream.get("bytes_duplicated")
out["connections_reset"] = stream.get("connections_reset")
out["ok"] = bool(
    stream.get("stream_ok")
    and int(cfail) == 0
    and fwd.get("error") is None and fwd.get("bytes", 0) > 0
    and rev.get("error") is None and rev.get("bytes", 0) > 0
    and out["primary_alive"]
    and out["rst_frames"]["stream"] == 0
    and out["rst_frames"]["http"] == 0
)
print(json.dumps(out))
sys.exit(0 if out["ok"] else 1)
EOF
