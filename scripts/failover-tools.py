#!/usr/bin/python3
"""The failover script's verdict for iperf3 and curl loads, in the stream tool's terms.

    failover-tools.py iperf|curl DIR BYTES

Reads DIR/iperf3-client.json and DIR/iperf3-server.json (iperf3 -J of one timed upload; BYTES unused), or
DIR/curl.out ("SIZE HTTP_CODE"), DIR/curl.log (curl's errors), DIR/got-big.bin and DIR/nginx/www/big.bin
(the download and the file), and prints one JSON object with the fields scripts/failover.sh reports.
"""

import filecmp
import json
import os
import sys


def read_json(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def read_text(d, name):
    try:
        with open(os.path.join(d, name), errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def iperf(d, size):
    c, sv = read_json(d, "iperf3-client.json"), read_json(d, "iperf3-server.json")
    err = c.get("error") or sv.get("error")
    sent = c.get("end", {}).get("sum_sent", {}).get("bytes", 0)
    # The server's own count; the client's copy of it when the server's report is missing.
    got = sv.get("end", {}).get("sum_received", {}).get("bytes", 0) or c.get("end", {}).get(
        "sum_received", {}
    ).get("bytes", 0)
    # The longest run of reporting intervals in which nothing was sent.
    stall = run = 0
    for i in c.get("intervals", []):
        s = i.get("sum", {})
        if s.get("bytes", 0) == 0:
            run += int(1000 * s.get("seconds", 0))
            stall = max(stall, run)
        else:
            run = 0
    reset = 1 if err and ("reset" in err.lower() or "refused" in err.lower()) else 0
    # iperf3's server stops counting when the test ends, with bytes still in its socket: its figure is
    # reported, and only an error (a reset, a stalled control connection) fails the run.
    ok = not err and sent > 0 and got > 0
    return {
        "connections": 2,
        "bytes_sent": sent,
        "bytes_acked": sent if not err else 0,
        "bytes_delivered": got,
        "bytes_lost": 0,
        "bytes_duplicated": 0,
        "connections_reset": reset,
        "connections_failed": 0 if ok else 1,
        "stall_ms": stall,
        "takeover_ms": None,
        "error": err or None,
        "stream_ok": bool(ok),
    }


def curl(d, size):
    try:
        got_s, code = read_text(d, "curl.out").split()[:2]
        got = int(float(got_s))
    except ValueError:
        got, code = 0, "000"
    err = read_text(d, "curl.log")
    path = os.path.join(d, "got-big.bin")
    same = os.path.exists(path) and filecmp.cmp(path, os.path.join(d, "nginx", "www", "big.bin"), shallow=False)
    ok = code == "200" and same and got == size and not err
    return {
        "connections": 1,
        "bytes_sent": size,
        "bytes_acked": got,
        "bytes_delivered": got if same else 0,
        "bytes_lost": 0 if same else max(0, size - got),
        # A download of the right length that differs from the file: corrupt or doubled bytes.
        "bytes_duplicated": 0 if same or got != size else got,
        "connections_reset": 1 if "reset" in err.lower() else 0,
        "connections_failed": 0 if ok else 1,
        "stall_ms": 0,
        "takeover_ms": None,
        "error": err or None,
        "stream_ok": bool(ok),
    }


def main():
    load, d, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = iperf(d, size) if load == "iperf" else curl(d, size)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
