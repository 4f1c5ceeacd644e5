#!/usr/bin/python3
"""hfstream: checksummed TCP streams between Linux peers, for holdfast's namespace tests.

Every byte of a stream is a pure function of (stream id, position), the same generator as
control/src/sim/stream.rs: a 16-byte header (magic "hold", stream id, body length, big-endian) and then
byte_at(id, pos). So the receiver verifies each byte where it lands, and a lost, duplicated or corrupted
byte cannot hide.

  hfstream.py server --listen 198.18.2.10:7000 --conns 4       # verifies, echoes, prints one JSON object
  hfstream.py client --connect 198.18.1.1:7000 --conns 4 --bytes 4000000 --id-base 100
  hfstream.py combine CLIENT.json SERVER.json                  # the failover script's verdict fields
  hfstream.py dump --id 7 --bytes 64                           # stream bytes as hex (cross-checked by a Rust test)

The client reports, per connection, bytes sent (taken by the kernel), acknowledged (sent minus what is
still in the socket's send queue, SIOCOUTQ, sampled while the connection is alive) and echoed (verified
echo bytes). The server reports delivered (distinct stream bytes that verified at their position),
duplicated (bytes received again at a position already delivered), lost (bytes never received, at the end)
and corrupt (bytes matching no position nearby). A reset connection is counted on either side.

Written for Debian's /usr/bin/python3 with the standard library only: it runs in any namespace without a
build, and reads TCP_INFO / SIOCOUTQ through getsockopt/ioctl without unsafe code.
"""

import argparse
import array
import fcntl
import json
import socket
import struct
import sys
import termios
import threading
import time

HEADER_LEN = 16
MAGIC = 0x686F6C64
M64 = (1 << 64) - 1
CHUNK = 1 << 16  # generator cache granule (bytes of body)
RESYNC_WINDOW = 1 << 20  # how far around a mismatch to look for where the data really belongs
GAP_MIN = 0.1  # client pauses at least this long (s) are reported with their wall-clock times
GAPS_KEPT = 8

TCP_STATES_ALIVE = {1, 4, 5, 8, 9, 11}  # ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING


def _block(idx_hi, block):
    x = idx_hi ^ block ^ 0x9E3779B97F4A7C15
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return x


def body(sid, start, n):
    """Bytes [start, start + n) of the body of stream `sid` (byte_at in stream.rs)."""
    if n <= 0:
        return b""
    first = start // 8
    last = (start + n + 7) // 8
    hi = ((sid & 0xFFFFFFFF) << 40) & M64  # as Rust's u64 shift: the high id bits fall off
    words = array.array("Q", (_block(hi, b) for b in range(first, last)))
    if sys.byteorder != "little":
        words.byteswap()
    raw = words.tobytes()
    off = start - first * 8
    return raw[off : off + n]


def header(sid, length):
    return struct.pack(">IIQ", MAGIC, sid, length)


class Generator:
    """Whole-stream bytes (header included) of one stream, generated in cached chunks."""

    def __init__(self, sid, length):
        self.sid = sid
        self.length = length
        self.hdr = header(sid, length)
        self.cache = {}

    def total(self):
        return self.length + HEADER_LEN

    def _chunk(self, k):
        c = self.cache.get(k)
        if c is None:
            if len(self.cache) > 64:
                self.cache.clear()
            start = k * CHUNK
            c = body(self.sid, start, min(CHUNK, self.length - start))
            self.cache[k] = c
        return c

    def get(self, pos, n):
        """Stream bytes [pos, pos + n), clipped to the stream."""
        end = min(pos + n, self.total())
        out = []
        while pos < end:
            if pos < HEADER_LEN:
                take = min(end, HEADER_LEN) - pos
                out.append(self.hdr[pos : pos + take])
            else:
                b = pos - HEADER_LEN
                k = b // CHUNK
                c = self._chunk(k)
                o = b - k * CHUNK
                take = min(end - pos, len(c) - o)
                if take <= 0:
                    break
                out.append(c[o : o + take])
            pos += take
        return b"".join(out)


def common_prefix(a, b):
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class Verifier:
    """Checks an arriving stream byte by byte, and on a mismatch finds where the data belongs."""

    def __init__(self):
        self.hdr = b""
        self.gen = None
        self.pos = 0  # stream position the next byte is expected at
        self.high = HEADER_LEN  # end of what was delivered
        self.gaps = 0  # bytes skipped over by a forward resync
        self.duplicated = 0
        self.corrupt = 0
        self.broken = False  # the header was bad: nothing can be verified

    def sid(self):
        return self.gen.sid if self.gen else None

    def feed(self, data):
        if self.gen is None and not self.broken:
            need = HEADER_LEN - len(self.hdr)
            self.hdr += data[:need]
            data = data[need:]
            if len(self.hdr) < HEADER_LEN:
                return
            magic, sid, length = struct.unpack(">IIQ", self.hdr)
            if magic != MAGIC:
                self.broken = True
                self.corrupt += HEADER_LEN
            else:
                self.gen = Generator(sid, length)
                self.pos = HEADER_LEN
        if self.broken:
            self.corrupt += len(data)
            return
        while data:
            want = self.gen.get(self.pos, len(data))
            n = common_prefix(data, want)
            self._account(self.pos, n)
            self.pos += n
            data = data[n:]
            if data:
                data = self._resync(data)

    def _account(self, pos, n):
        end = pos + n
        if pos < self.high:
            self.duplicated += min(end, self.high) - pos
        if end > self.high:
            self.high = end

    def _resync(self, data):
        probe = data[:64]
        if len(probe) >= 16:
            lo = max(HEADER_LEN, self.pos - RESYNC_WINDOW)
            window = self.gen.get(lo, 2 * RESYNC_WINDOW + len(probe))
            i = window.find(probe)
            if i >= 0:
                q = lo + i
                if q > self.high:
                    self.gaps += q - self.high
                    self.high = q
                self.pos = q
                return data
        # Nothing nearby matches: count the rest of this read as corrupt and keep the position.
        self.corrupt += len(data)
        return b""

    def report(self):
        total = self.gen.total() if self.gen else None
        delivered = self.high - self.gaps if self.gen else 0
        return {
            "id": self.sid(),
            "expected": total,
            "delivered": delivered,
            "duplicated": self.duplicated,
            "corrupt": self.corrupt,
            "lost": (total - delivered) if total is not None else None,
            "complete": bool(
                self.gen and delivered == total and self.duplicated == 0 and self.corrupt == 0
            ),
        }


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def outq(sock):
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return struct.unpack("i", buf)[0]
    except OSError:
        return None


def tcp_state(sock):
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return None


def is_reset(e):
    return isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError))


# ---------------------------------------------------------------------------------------------------- server


def serve_one(conn, echo, out, lock):
    v = Verifier()
    rec = {"reset": False, "error": None, "received": 0, "finished": False}
    # Registered at once, so a connection that never ends is still reported at the deadline.
    with lock:
        out.append((rec, v))
    try:
        while True:
            data = conn.recv(1 << 16)
            if not data:
                break
            rec["received"] += len(data)
            v.feed(data)
            if echo:
                conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        # Wait for the client's close so our FIN and the last echo bytes are acknowledged.
        conn.settimeout(10)
        while conn.recv(1 << 16):
            pass
    except OSError as e:
        rec["reset"] = is_reset(e)
        rec["error"] = repr(e)
    finally:
        conn.close()
        rec["finished"] = True


def server(args):
    host, port = parse_addr(args.listen)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(128)
    ls.settimeout(0.2)
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("ready\n")
    deadline = time.monotonic() + args.timeout
    out, lock, threads = [], threading.Lock(), []
    accepted = 0
    while accepted < args.conns and time.monotonic() < deadline:
        try:
            conn, _ = ls.accept()
        except socket.timeout:
            continue
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=serve_one, args=(conn, not args.no_echo, out, lock), daemon=True)
        t.start()
        threads.append(t)
        accepted += 1
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    ls.close()
    with lock:
        streams = [dict(rec, **v.report()) for rec, v in out]
    streams.sort(key=lambda r: (r["id"] is None, r["id"] or 0))
    unfinished = sum(1 for r in streams if not r["finished"])
    res = {
        "mode": "server",
        "connections": accepted,
        "connections_expected": args.conns,
        "connections_unfinished": unfinished,
        "connections_reset": sum(1 for r in streams if r["reset"]),
        "bytes_delivered": sum(r["delivered"] for r in streams),
        "bytes_duplicated": sum(r["duplicated"] for r in streams),
        "bytes_corrupt": sum(r["corrupt"] for r in streams),
        "bytes_lost": sum(r["lost"] or 0 for r in streams),
        "streams": streams,
    }
    res["ok"] = (
        accepted == args.conns
        and unfinished == 0
        and all(r["complete"] and not r["reset"] for r in streams)
    )
    print(json.dumps(res), flush=True)
    return 0 if res["ok"] else 1


# ---------------------------------------------------------------------------------------------------- client


class Conn:
    def __init__(self, sid, length):
        self.sid = sid
        self.gen = Generator(sid, length)
        self.sent = 0
        self.acked = 0
        self.echo = Verifier()
        self.echoed_raw = 0
        self.reset = False
        self.errors = []
        self.last_progress = None
        self.stall = 0.0
        self.gaps = []  # (from, to) wall-clock seconds of pauses over GAP_MIN; to None while open
        self.done_sending = False
        self.done = False
        self.lock = threading.Lock()

    def progress(self, now):
        with self.lock:
            if self.last_progress is not None:
                gap = now - self.last_progress
                self.stall = max(self.stall, gap)
                if gap >= GAP_MIN:
                    wall = time.time()
                    self.gaps.append((wall - gap, wall))
                    self.gaps = sorted(self.gaps, key=lambda g: g[0] - g[1])[:GAPS_KEPT]
            self.last_progress = now

    def close_gaps(self, now, finished):
        """At the end: a connection that did not finish has been stalled since its last progress."""
        with self.lock:
            if finished or self.last_progress is None:
                return
            gap = now - self.last_progress
            self.stall = max(self.stall, gap)
            self.gaps.append((time.time() - gap, None))

    def sample_acked(self, sock):
        # SIOCOUTQ counts bytes written and not yet acknowledged; it means nothing once the socket is
        # closed or reset, so only live states count.
        if tcp_state(sock) not in TCP_STATES_ALIVE:
            return
        q = outq(sock)
        if q is None:
            return
        # A queued FIN counts one in the send queue.
        a = max(0, min(self.sent, self.sent - q + (1 if self.done_sending else 0)))
        if a > self.acked:
            self.acked = a
            self.progress(time.monotonic())

    def fail(self, e):
        with self.lock:
            self.errors.append(repr(e))
            if is_reset(e):
                self.reset = True


def client_send(c, sock):
    total = c.gen.total()
    try:
        while c.sent < total:
            chunk = c.gen.get(c.sent, 1 << 16)
            n = sock.send(chunk)
            c.sent += n
            # Only what the network did counts as progress (an ACK, an echo), not filling our own buffer.
            c.sample_acked(sock)
        sock.shutdown(socket.SHUT_WR)
        c.done_sending = True
    except OSError as e:
        c.fail(e)


def client_recv(c, sock, echo):
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            c.echoed_raw += len(data)
            c.echo.feed(data)
            c.progress(time.monotonic())
    except OSError as e:
        c.fail(e)
    c.done = True


def connect_retry(addr, deadline):
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(addr)
            s.settimeout(None)
            return s
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_conn(c, addr, echo, deadline):
    try:
        sock = connect_retry(addr, time.monotonic() + 5)
    except OSError as e:
        c.fail(e)
        c.done = True
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.progress(time.monotonic())
    rt = threading.Thread(target=client_recv, args=(c, sock, echo), daemon=True)
    rt.start()
    st = threading.Thread(target=client_send, args=(c, sock), daemon=True)
    st.start()
    while (st.is_alive() or rt.is_alive()) and time.monotonic() < deadline:
        c.sample_acked(sock)
        time.sleep(0.01)
    c.sample_acked(sock)
    if rt.is_alive() or st.is_alive():
        c.errors.append("timeout")
    # The echo came back whole only if the server had everything: then every byte was acknowledged
    # (the last SIOCOUTQ sample may predate the final ACK).
    finished = c.echo.report()["complete"] and c.done_sending
    if finished:
        c.acked = c.sent
    c.close_gaps(time.monotonic(), finished or (c.done_sending and not echo and c.acked == c.sent))
    sock.close()


def client(args):
    addr = parse_addr(args.connect)
    deadline = time.monotonic() + args.timeout
    conns = [Conn(args.id_base + i, args.bytes) for i in range(args.conns)]
    threads = [
        threading.Thread(target=run_conn, args=(c, addr, not args.no_echo, deadline), daemon=True)
        for c in conns
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic() + 1))
    elapsed = time.monotonic() - t0
    streams = []
    for c in conns:
        e = c.echo.report()
        streams.append(
            {
                "id": c.sid,
                "total": c.gen.total(),
                "sent": c.sent,
                "acked": c.acked,
                "echoed": e["delivered"],
                "echo_duplicated": e["duplicated"],
                "echo_corrupt": e["corrupt"],
                "echo_complete": e["complete"],
                "reset": c.reset,
                "stall_ms": int(c.stall * 1000),
                "gaps_ms": [[int(a * 1000), int(b * 1000) if b else None] for a, b in sorted(c.gaps)],
                "errors": c.errors,
            }
        )
    res = {
        "mode": "client",
        "connections": len(conns),
        "connections_reset": sum(1 for s in streams if s["reset"]),
        "connections_failed": sum(1 for s in streams if s["reset"] or s["errors"] or s["sent"] < s["total"]),
        "bytes_sent": sum(s["sent"] for s in streams),
        "bytes_acked": sum(s["acked"] for s in streams),
        "bytes_echoed": sum(s["echoed"] for s in streams),
        "stall_ms": max((s["stall_ms"] for s in streams), default=0),
        "elapsed_ms": int(elapsed * 1000),
        "streams": streams,
    }
    res["ok"] = all(
        s["sent"] == s["total"]
        and not s["reset"]
        and not s["errors"]
        and (args.no_echo or s["echo_complete"])
        for s in streams
    )
    print(json.dumps(res), flush=True)
    return 0 if res["ok"] else 1


# ---------------------------------------------------------------------------------------------------- combine


def combine(args):
    """The failover script's verdict: client and server reports joined by stream id."""
    with open(args.client_json) as f:
        cl = json.load(f)
    with open(args.server_json) as f:
        sv = json.load(f)
    by_id = {s["id"]: s for s in sv.get("streams", []) if s.get("id") is not None}
    lost = dup = delivered = 0
    missing_streams = 0
    for s in cl.get("streams", []):
        r = by_id.get(s["id"])
        got = r["delivered"] if r else 0
        if r is None:
            missing_streams += 1
        delivered += got
        # Lost = acknowledged to the client and never delivered to the server.
        lost += max(0, s["acked"] - got)
        if r:
            dup += r["duplicated"] + r["corrupt"]
        dup += s["echo_duplicated"] + s["echo_corrupt"]
    reset = max(cl.get("connections_reset", 0), sv.get("connections_reset", 0))
    failed = max(cl.get("connections_failed", 0), sv.get("connections_unfinished", 0))
    takeover = None
    if args.fault_ms is not None:
        # Fault to the first progress after it, on the connection that waited longest; open if any
        # connection never progressed again.
        # A pause that began a little after the fault still belongs to it: the client reads what its
        # kernel already held, and samples ACKs every 10 ms.
        slack = 500
        waits = []
        never_resumed = False
        for s in cl.get("streams", []):
            for a, b in s.get("gaps_ms", []):
                if b is None:
                    never_resumed = True
                elif a <= args.fault_ms + slack and b >= args.fault_ms:
                    waits.append(b - args.fault_ms)
        if not never_resumed:
            takeover = max(waits, default=0)
    out = {
        "bytes_sent": cl.get("bytes_sent", 0),
        "bytes_acked": cl.get("bytes_acked", 0),
        "bytes_delivered": delivered,
        "bytes_echoed": cl.get("bytes_echoed", 0),
        "bytes_lost": lost,
        "bytes_duplicated": dup,
        "connections": cl.get("connections", 0),
        "connections_reset": reset,
        "connections_failed": failed,
        "streams_never_seen_by_server": missing_streams,
        "takeover_ms": takeover,
        "stall_ms": cl.get("stall_ms", 0),
    }
    out["stream_ok"] = bool(
        cl.get("ok") and sv.get("ok") and lost == 0 and dup == 0 and reset == 0 and failed == 0
    )
    print(json.dumps(out), flush=True)
    return 0


def dump(args):
    g = Generator(args.id, args.bytes)
    print(g.get(0, g.total()).hex())
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--conns", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--no-echo", action="store_true")
    s.add_argument("--ready", help="file written once listening")
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--conns", type=int, default=1)
    c.add_argument("--bytes", type=int, default=1 << 20, help="body bytes per connection")
    c.add_argument("--id-base", type=int, default=1)
    c.add_argument("--timeout", type=float, default=60)
    c.add_argument("--no-echo", action="store_true")
    m = sub.add_parser("combine")
    m.add_argument("client_json")
    m.add_argument("server_json")
    m.add_argument("--fault-ms", type=int, help="wall-clock ms of an injected fault: adds takeover_ms")
    d = sub.add_parser("dump")
    d.add_argument("--id", type=int, required=True)
    d.add_argument("--bytes", type=int, required=True)
    a = p.parse_args()
    return {"server": server, "client": client, "combine": combine, "dump": dump}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
