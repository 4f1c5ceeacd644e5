#!/usr/bin/env bash
# Regenerates dataplane/tests/fixtures/linux-tcp.pcap: a short exchange between two Linux network namespaces
# (hfw-a 198.18.0.1 → hfw-b 198.18.0.2 over a veth) with MSS, window scaling, SACK and timestamps on, one
# ICMP echo, the ARP that precedes them, and two dropped data segments so that SACK blocks appear.
#
# Needs root, iproute2, tcpdump, ethtool, nftables and python3. Deletes everything it creates.
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")/.." && pwd)/dataplane/tests/fixtures/linux-tcp.pcap}"
A=hfw-a
B=hfw-b
py=/usr/bin/python3

cleanup() {
    [[ -n "${tcpdump_pid:-}" ]] && kill "$tcpdump_pid" 2>/dev/null || true
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

ip netns add "$A"
ip netns add "$B"
ip link add hfw-a0 netns "$A" type veth peer name hfw-b0 netns "$B"
for ns in "$A" "$B"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_sack=1 net.ipv4.tcp_timestamps=1 net.ipv4.tcp_window_scaling=1
    ip netns exec "$ns" sysctl -qw net.ipv4.ping_group_range="0 0"
done
ip -n "$A" addr add 198.18.0.1/24 dev hfw-a0
ip -n "$B" addr add 198.18.0.2/24 dev hfw-b0
# Software checksums and MTU-sized segments, so the capture holds what a NIC would carry.
ip netns exec "$A" ethtool -K hfw-a0 tx off rx off tso off gso off gro off >/dev/null
ip netns exec "$B" ethtool -K hfw-b0 tx off rx off tso off gso off gro off >/dev/null
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip -n "$A" link set hfw-a0 up
ip -n "$B" link set hfw-b0 up

# Drop every second full-sized segment arriving at hfw-b (after tcpdump has seen it), so that hfw-b
# acknowledges with SACK blocks and hfw-a retransmits; the drop count is printed at the end.
ip netns exec "$B" nft -f - <<'NFT'
table inet hfw {
    chain input {
        type filter hook input priority 0;
        tcp dport 5001 ip length > 1000 numgen inc mod 2 == 1 counter drop
    }
}
NFT

ip netns exec "$B" tcpdump -q -i hfw-b0 -U -s 0 -w "$out" 2>/dev/null &
tcpdump_pid=$!
sleep 1

ip netns exec "$B" "$py" - <<'PY' &
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.2", 5001)); s.listen(1)
c, _ = s.accept()
got = b""
while len(got) < 6000:
    chunk = c.recv(65536)
    if not chunk: break
    got += chunk
c.sendall(b"pong:" + got[:64])
c.shutdown(socket.SHUT_WR)
while c.recv(65536): pass
c.close()
PY
server_pid=$!
sleep 0.5

ip netns exec "$A" "$py" - <<'PY'
import socket, struct, time
# One ICMP echo (an unprivileged ping socket: the kernel fills in the id and checksum).
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
p.settimeout(2)
p.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"holdfast-ping", ("198.18.0.2", 0))
p.recv(1500)
p.close()
c = socket.create_connection(("198.18.0.2", 5001))
c.sendall(bytes((i * 7) & 0xFF for i in range(6000)))
reply = c.recv(65536)
assert reply.startswith(b"pong:"), reply
c.shutdown(socket.SHUT_WR)
while c.recv(65536): pass
c.close()
time.sleep(0.5)
PY
wait "$server_pid"
server_pid=
sleep 0.5
kill "$tcpdump_pid"
wait "$tcpdump_pid" 2>/dev/null || true
tcpdump_pid=
ip netns exec "$B" nft list ruleset | grep -o 'packets [0-9]*' || true
ls -l "$out"
