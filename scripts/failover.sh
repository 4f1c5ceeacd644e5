#!/usr/bin/env bash
# Failover through real Linux peers: a primary and a standby from config files in the namespace test bed,
# a Linux client streaming N MB of checksummed data through the VIP to a Linux server that verifies it, a
# fault injected into the primary mid-transfer, and one JSON object with the verdict.
#
#   sudo scripts/failover.sh [--fault kill|linkdown|stop|switchover|kill-rejoin-kill] [--policy backend|replica|none]
#                            [--backend afpacket|afxdp|dpdk] [--mb N] [--conns K]
#                            [--fault-after-ms MS] [--resume-after-ms MS] [--timeout S]
#                            [--fault-without-standby] [--load stream|iperf|curl] [--iperf-seconds S]
#                            [--virtual-mac] [--prefix hfl]
#
#   kill      kill -9 of the primary's holdfast
#   standby-kill  kill -9 of the standby: the primary carries on alone (degraded), nothing takes over
#   linkdown  the primary's client and server links go down in the switch (the box lives on, unreachable;
#             it must notice the lost carrier and step down, which is what lets the standby take over)
#   stop      SIGSTOP of the primary (a hung box), SIGCONT --resume-after-ms later (default 2000): the
#             woken box must hear the standby's later epoch and fence itself without disturbing anything
#   switchover  a planned switchover: `holdfastctl switchover` on the primary's control socket; the
#             standby takes over when the primary says it has everything, and the primary's run ends
#             "switched over" with exit status 0 (switchover_reply holds holdfastctl's answer)
#   kill-rejoin-kill  kill -9 of the primary; once the standby took over, the dead box restarts with role
#             standby (same namespace, ports and epoch file), follows the new primary's epoch and receives
#             every flow in the bulk copy; then kill -9 of the new primary, and the rejoined box takes over
#             (rejoin_took_over, rejoin_takeover_flows from its log, rejoin.log)
#
# Fields: verdict ("pass" | "fail" | "unavailable"), failover (what happened to the failover itself),
# bytes_sent, bytes_acked (what the client's kernel saw acknowledged), bytes_delivered (distinct bytes the
# server verified), bytes_lost (acknowledged to the client, never delivered), bytes_duplicated (delivered
# twice or corrupt, either direction), connections_reset, stall_ms (the longest time a client connection
# made no progress), takeover_ms (fault to the first progress after it; null when no fault was injected),
# standby_took_over, takeover_flows and standby_took_over_after_fault_ms (from the standby's log; negative:
# it took over a live primary before the fault, fenced by the later epoch), primary_stepped_down (the primary's log
# says it stepped down: expected after linkdown and stop, with the reason in primary_step_down).
#
# --virtual-mac gives both boxes one client-side MAC for the VIP (addresses.virtual_mac): the client's ARP
# entry never changes, and the bridge relearns the MAC's port from the new primary's first frame.
# --load picks the Linux peers: stream (hfstream.py, --conns connections of N MB in all, checksummed,
# echoed back), iperf (one iperf3 upload of --iperf-seconds (4) to iperf3 -s: its control and data
# connections must both survive without an error on either side; iperf3's server counts what it read
# before the test ended, so its figures are reported, not held to bytes sent), curl (curl downloads an N MB file from nginx at
# a limited rate, compared with the file byte for byte). For iperf and curl the byte fields come from the
# tools (bytes_acked = bytes_sent once the tool finished cleanly) and takeover_ms is null.
#
# A pass needs the stream verified end to end, the fault injected while the transfer was still running,
# the standby's takeover, and for linkdown and stop the primary's step-down.
# With --fault-without-standby no standby is started and the fault is injected anyway (the baseline every
# plain proxy gives: expect a "fail" with lost bytes under policy none, resets under any).
# --timeout bounds the transfer (default 120 s; 8 s with --fault-without-standby, since nothing recovers).
# It exits 0 on "pass", 1 on "fail", 2 on "unavailable".
#
# HOLDFAST_BIN picks the binary (default target/debug/holdfast), HOLDFASTCTL_BIN the control client (default:
# holdfastctl beside it); HF_KEEP=1 keeps logs and configs.

set -Eeuo pipefail
# shellcheck source=scripts/testbed.sh
source "$(dirname "$0")/testbed.sh"

fault=kill
policy=backend
backend=afpacket
load=stream
iperf_s=4
mb=8
conns=4
fault_after_ms=1000
resume_after_ms=2000
prefix=hfl
timeout_s=""
force_fault=0
usage() {
  echo "usage: $0 [--fault kill|linkdown|stop] [--policy backend|replica|none] [--backend afpacket|afxdp|dpdk]" \
    "[--mb N] [--conns K] [--fault-after-ms MS] [--resume-after-ms MS] [--timeout S]" \
    "[--fault-without-standby] [--load stream|iperf|curl] [--iperf-seconds S] [--virtual-mac] [--prefix P]" >&2
  exit 64
}
while [ $# -gt 0 ]; do
  case $1 in
    --fault) fault=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --load) load=$2; shift 2 ;;
    --iperf-seconds) iperf_s=$2; shift 2 ;;
    --virtual-mac) export TB_VIRTUAL_MAC=02:68:66:00:00:01; shift ;;
    --mb) mb=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --fault-after-ms) fault_after_ms=$2; shift 2 ;;
    --resume-after-ms) resume_after_ms=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --fault-without-standby) force_fault=1; shift ;;
    *) usage ;;
  esac
done
case $fault in kill | standby-kill | linkdown | stop | switchover | kill-rejoin-kill) ;; *) usage ;; esac
case $load in stream | iperf | curl) ;; *) usage ;; esac
case $policy in backend | replica | none) ;; *) usage ;; esac
case $backend in afpacket | afxdp | dpdk) ;; *) usage ;; esac
if [ -z "$timeout_s" ]; then
  if [ "$force_fault" = 1 ]; then timeout_s=8; else timeout_s=120; fi
fi
[[ $mb =~ ^[0-9]+$ && $conns =~ ^[1-9][0-9]*$ && $fault_after_ms =~ ^[0-9]+$ && $resume_after_ms =~ ^[0-9]+$ &&
  $timeout_s =~ ^[1-9][0-9]*$ ]] || usage

# report VERDICT FAILOVER_TEXT FAULT_INJECTED TAKEOVER_MS STREAM_JSON: prints the one JSON object.
# Reads the boxes' logs (TB_DIR/standby.log, TB_DIR/primary.log) for what they say they did.
report() {
  "$TB_PY" - "$@" "$fault" "$policy" "$backend" "$mb" "$conns" "${TB_DIR:-}" "$load" "${resume_ns:-}" "${fault_ns:-}" <<'EOF'
import datetime, json, os, re, sys
verdict, failover, injected, takeover, stream, fault, policy, backend, mb, conns, d, load, resume_ns, fault_ns = sys.argv[1:]
s = json.loads(stream) if stream else {}
def log(name):
    try:
        with open(os.path.join(d, name), errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read())
    except OSError:
        return ""
sb, pr = log("standby.log"), log("primary.log")
took = re.search(r"took over(?: from a dead primary|: planned switchover) flows=(\d+)", sb)
down = re.search(r"stepping down: (.*)", pr)
def stamp_ms(pattern, text):
    m = re.search(r"^(\S+Z)\s+" + pattern, text, re.M)
    if not m:
        return None
    t = datetime.datetime.strptime(m.group(1)[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
# How long a woken primary ran before it stepped down: SIGCONT to its log line (stop only).
fenced_ms = None
down_at = stamp_ms(r"ERROR.*stepping down", pr)
if resume_ns and down_at is not None:
    fenced_ms = int(round(down_at - int(resume_ns) / 1e6))
# The standby's own clock of the failover: fault to its takeover (negative: it took over a live primary
# before the fault, which the later epoch then fenced).
took_at = stamp_ms(r"WARN.*took over(?: from a dead primary|: planned switchover)", sb)
detect_ms = int(round(took_at - int(fault_ns) / 1e6)) if fault_ns and took_at is not None else None
out = {
    "verdict": verdict,
    "failover": failover,
    "fault": fault,
    "fault_injected": injected == "1",
    "policy": policy,
    "backend": backend,
    "load": load,
    "mb": int(mb),
    "connections": s.get("connections", int(conns)),
    "bytes_sent": s.get("bytes_sent", 0),
    "bytes_acked": s.get("bytes_acked", 0),
    "bytes_delivered": s.get("bytes_delivered", 0),
    "bytes_echoed": s.get("bytes_echoed", 0),
    "bytes_lost": s.get("bytes_lost", 0),
    "bytes_duplicated": s.get("bytes_duplicated", 0),
    "connections_reset": s.get("connections_reset", 0),
    "connections_failed": s.get("connections_failed", 0),
    "stall_ms": s.get("stall_ms", 0),
    "takeover_ms": int(takeover) if takeover else None,
    "standby_took_over": took is not None,
    "takeover_flows": int(took.group(1)) if took else 0,
    "primary_stepped_down": down is not None,
    "primary_step_down": down.group(1).strip() if down else None,
    "standby_took_over_after_fault_ms": detect_ms,
}
if fault == "stop":
    out["fenced_after_resume_ms"] = fenced_ms
if fault == "switchover":
    try:
        with open(os.path.join(d, "switchover.json")) as f:
            out["switchover_reply"] = json.load(f)
    except (OSError, ValueError):
        out["switchover_reply"] = None
    out["primary_switched_over"] = re.search(r"switched over: the standby serves now", pr) is not None
if fault == "kill-rejoin-kill":
    rj = log("rejoin.log")
    rtook = re.search(r"took over from a dead primary flows=(\d+)", rj)
    out["rejoin_followed_epoch"] = re.search(r"following the primary in its epoch", rj) is not None
    out["rejoin_took_over"] = rtook is not None
    out["rejoin_takeover_flows"] = int(rtook.group(1)) if rtook else 0
if s.get("error"):
    out["error"] = s["error"]
print(json.dumps(out))
EOF
}

tb_init "$prefix"
tb_up

# Both boxes get a replication port and section: the standby needs them, and a primary with them knows a
# standby is expected.
export TB_REPLICATION=1
# Each connection carries its share of the N MB (the header adds 16 bytes).
bytes=$((mb * 1000000 / conns))
S="$prefix-server"
C="$prefix-client"

stream_server=""
case $load in
  stream)
    rm -f "$TB_DIR/stream.ready"
    tb_bg "$S" "$TB_DIR/stream-server.json" "$TB_PY" "$TB_STREAM" server --listen "$TB_SERVER:7000" \
      --conns "$conns" --timeout $((timeout_s + 2)) --ready "$TB_DIR/stream.ready"
    stream_server=$TB_LAST_PID
    tb_wait_listen "$S" 7000
    ;;
  iperf)
    # One test, then it exits: its own report holds what it received.
    tb_bg "$S" "$TB_DIR/iperf3-server.json" iperf3 -s -1 -J -B "$TB_SERVER"
    stream_server=$TB_LAST_PID
    tb_wait_listen "$S" 5201
    ;;
  curl)
    tb_nginx
    head -c $((mb * 1000000)) /dev/urandom >"$TB_DIR/nginx/www/big.bin"
    chmod 0644 "$TB_DIR/nginx/www/big.bin"
    ;;
esac

failover=""
standby_pid=""
if [ "$force_fault" = 1 ]; then
  failover="unavailable: no standby (--fault-without-standby)"
elif ! tb_box standby "$policy" "$backend"; then
  failover="unavailable: no standby yet (holdfast run refused the standby: $TB_BOX_ERROR)"
else
  standby_pid=$TB_BOX_PID
fi

primary_policy=$policy
if [ -n "$failover" ] && [ "$policy" = replica ]; then
  # Without a standby, replica cannot run; measure the primary under backend, and say so.
  primary_policy=backend
  failover="$failover; the primary ran with policy backend, since replica needs the standby"
fi
if [ -n "$failover" ]; then
  # No standby: a primary without replication expectations.
  TB_REPLICATION=0
fi
if ! tb_box primary "$primary_policy" "$backend"; then
  report unavailable "unavailable: the primary did not start: $TB_BOX_ERROR" 0 "" ""
  exit 2
fi
primary_pid=$TB_BOX_PID

case $load in
  stream)
    ip netns exec "$C" timeout $((timeout_s + 30)) "$TB_PY" "$TB_STREAM" client --connect "$TB_VIP:7000" \
      --conns "$conns" --bytes "$bytes" --id-base 1000 --timeout "$timeout_s" >"$TB_DIR/stream-client.json" 2>"$TB_DIR/stream-client.log" &
    ;;
  iperf)
    ip netns exec "$C" timeout $((timeout_s + 30)) iperf3 -c "$TB_VIP" -t "$iperf_s" -i 0.1 -J \
      --connect-timeout 5000 >"$TB_DIR/iperf3-client.json" 2>"$TB_DIR/iperf3-client.log" &
    ;;
  curl)
    tb_wait_vip 80
    # The rate limit spreads the download over the fault (about 2 s whatever the size).
    ip netns exec "$C" timeout $((timeout_s + 30)) curl -fsS --max-time "$timeout_s" --limit-rate "$((mb * 1000000 / 2))" \
      -o "$TB_DIR/got-big.bin" -w '%{size_download} %{http_code}\n' "http://$TB_VIP/big.bin" \
      >"$TB_DIR/curl.out" 2>"$TB_DIR/curl.log" &
    ;;
esac
client_pid=$!
TB_PIDS+=("$client_pid")

injected=0
fault_ns=""
resume_ns=""
gone=""
switch_failed=0
mid_transfer=1
if [ -n "$standby_pid" ] || [ "$force_fault" = 1 ]; then
  sleep "$(awk -v ms="$fault_after_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
  kill -0 "$client_pid" 2>/dev/null || mid_transfer=0
  fault_ns=$(date +%s%N)
  # A box that is already gone when its fault comes fails the run (and must not end the script silently).
  gone=""
  case $fault in
    kill | kill-rejoin-kill) kill -KILL "$primary_pid" 2>/dev/null || gone=primary ;;
    standby-kill) kill -KILL "$standby_pid" 2>/dev/null || gone=standby ;;
    # Cleanup's SIGKILL ends a stopped process too.
    stop) kill -STOP "$primary_pid" 2>/dev/null || gone=primary ;;
    linkdown)
      ip -n "$prefix-sw" link set c-primary down
      ip -n "$prefix-sw" link set s-primary down
      ;;
    switchover)
      ctl=${HOLDFASTCTL_BIN:-$(dirname "$HOLDFAST_BIN")/holdfastctl}
      kill -0 "$primary_pid" 2>/dev/null || gone=primary
      "$ctl" --socket "$TB_DIR/primary.sock" --json switchover --timeout-ms 10000 \
        >"$TB_DIR/switchover.json" 2>"$TB_DIR/switchover.log" || switch_failed=1
      ;;
  esac
  injected=1
  if [ "$fault" = kill-rejoin-kill ]; then
    for _ in $(seq 1 100); do grep -q "took over from a dead primary" "$TB_DIR/standby.log" && break; sleep 0.05; done
    # The dead box comes back as the standby: its own namespace, ports and epoch file.
    sed -e 's/^role = "primary"/role = "standby"/' -e "s#$TB_DIR/primary.sock#$TB_DIR/rejoin.sock#" \
      "$TB_DIR/primary.toml" >"$TB_DIR/rejoin.toml"
    tb_bg "$prefix-primary" "$TB_DIR/rejoin.log" "$HOLDFAST_BIN" run --config "$TB_DIR/rejoin.toml"
    ctl=${HOLDFASTCTL_BIN:-$(dirname "$HOLDFAST_BIN")/holdfastctl}
    synced=0
    for _ in $(seq 1 200); do
      if "$ctl" --socket "$TB_DIR/rejoin.sock" --json status 2>/dev/null |
        "$TB_PY" -c 'import json,sys; r = json.load(sys.stdin)["result"]; sys.exit(0 if r["epoch"] == 2 and r["stored_flows"] == int(sys.argv[1]) else 1)' "$conns" 2>/dev/null; then
        synced=1
        break
      fi
      sleep 0.05
    done
    kill -0 "$client_pid" 2>/dev/null || mid_transfer=0
    # Killing the only box that holds the flows would only prove that a box without them resets them.
    if [ "$synced" = 1 ]; then
      kill -KILL "$standby_pid" 2>/dev/null || gone=standby
    else
      gone="rejoined box (it never held every flow, so the new primary was not killed)"
    fi
  fi
  if [ "$fault" = stop ]; then
    sleep "$(awk -v ms="$resume_after_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
    resume_ns=$(date +%s%N)
    kill -CONT "$primary_pid" 2>/dev/null || true
  fi
fi

wait "$client_pid" || true
# The server reports at its own deadline when a connection never ended.
if [ -n "$stream_server" ]; then
  for _ in $(seq 1 $(((timeout_s + 5) * 10))); do kill -0 "$stream_server" 2>/dev/null || break; sleep 0.1; done
fi
fault_arg=()
[ "$injected" = 1 ] && fault_arg=(--fault-ms $((fault_ns / 1000000)))
case $load in
  stream)
    stream=$("$TB_PY" "$TB_STREAM" combine "${fault_arg[@]}" "$TB_DIR/stream-client.json" "$TB_DIR/stream-server.json" 2>/dev/null || echo '{}')
    ;;
  iperf | curl)
    # The tools' own reports in the stream tool's terms.
    stream=$("$TB_PY" "$TB_ROOT/scripts/failover-tools.py" "$load" "$TB_DIR" $((mb * 1000000)) || echo '{}')
    ;;
esac

takeover=""
if [ "$injected" = 1 ]; then
  # Until the standby reports its takeover itself, the clients tell it from outside: fault to the first
  # progress after it, on the connection that waited longest (null: some connection never resumed).
  takeover=$("$TB_PY" -c 'import json,sys; t = json.loads(sys.argv[1]).get("takeover_ms"); print("" if t is None else t)' "$stream")
  if [ -n "$failover" ]; then
    failover="$failover; $fault injected anyway (--fault-without-standby)"
  else
    failover="$fault injected $fault_after_ms ms into the transfer (at $((fault_ns / 1000000)) ms since the epoch)"
  fi
fi

ok=$("$TB_PY" -c 'import json,sys; print(1 if json.loads(sys.argv[1]).get("stream_ok") else 0)' "$stream")
if [ "$ok" = 1 ]; then verdict=pass; else verdict=fail; fi
if [ "$injected" = 1 ] && [ -n "$gone" ]; then
  verdict=fail
  failover="$failover; but the $gone had exited before the fault (see its log)"
fi
if [ "$injected" = 1 ] && [ "$mid_transfer" = 0 ]; then
  verdict=fail
  failover="$failover; but the transfer had ended before the fault (more --mb, or an earlier --fault-after-ms)"
fi
if [ -n "$standby_pid" ] && [ "$injected" = 1 ] && [ "$fault" != standby-kill ]; then
  # Give a woken primary a moment to hear the later epoch before its log is read.
  [ "$fault" = stop ] && sleep 0.5
  if ! grep -Eq "took over( from a dead primary|: planned switchover)" "$TB_DIR/standby.log"; then
    verdict=fail
    failover="$failover; the standby never took over"
  fi
  if [ "$fault" = switchover ]; then
    if [ "$switch_failed" = 1 ] || ! grep -q "took over: planned switchover" "$TB_DIR/standby.log"; then
      verdict=fail
      failover="$failover; the switchover failed: $(cat "$TB_DIR/switchover.json" "$TB_DIR/switchover.log" 2>/dev/null | tr '\n' ' ')"
    fi
    # Its run ends on its own, with status 0.
    for _ in $(seq 1 50); do kill -0 "$primary_pid" 2>/dev/null || break; sleep 0.1; done
    primary_rc=0
    if kill -0 "$primary_pid" 2>/dev/null; then
      primary_rc=running
    else
      wait "$primary_pid" 2>/dev/null || primary_rc=$?
    fi
    if [ "$primary_rc" != 0 ] || ! grep -q "switched over: the standby serves now" "$TB_DIR/primary.log"; then
      verdict=fail
      failover="$failover; the primary did not end switched over (exit status: $primary_rc)"
    fi
  elif [ "$fault" = kill-rejoin-kill ]; then
    if ! grep -q "following the primary in its epoch" "$TB_DIR/rejoin.log" ||
      ! grep -q "took over from a dead primary" "$TB_DIR/rejoin.log"; then
      verdict=fail
      failover="$failover; the rejoined box did not follow the new primary and take over from it"
    fi
  elif [ "$fault" != kill ] && ! grep -q "stepping down" "$TB_DIR/primary.log"; then
    verdict=fail
    failover="$failover; the primary never stepped down"
  fi
fi
if [ "$fault" = standby-kill ] && [ "$injected" = 1 ] && ! kill -0 "$primary_pid" 2>/dev/null; then
  verdict=fail
  failover="$failover; the primary did not survive its standby"
fi
report "$verdict" "$failover" "$injected" "$takeover" "$stream"
[ "$verdict" = pass ]
