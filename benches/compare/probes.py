#!/usr/bin/env python3
"""Protocol probes for probes.sh: raw-socket requests that a strict HTTP/1.1
proxy must refuse, normalise or pass through unchanged, sent to every proxy
of a run, with what each proxy answered and what reached the origins.

Three subcommands (Python 3.8+, standard library only):

  relay --pair LISTEN:TARGET... [--deny PORT] --log FILE
      The recording origin. Listens on each LISTEN port of 127.0.0.1 and
      relays every connection byte for byte to TARGET (a `switchyard origin`,
      which does the answering). On the way in it splits the stream into
      requests with the framing an origin would use (chunked when it is the
      final transfer coding, else Content-Length) and logs each request line
      and its headers as one JSON line. So a request that an origin would see,
      a smuggled one included, is logged even when its response never gets
      back to the client; framing the origin could not parse is logged too.
      --deny adds a listener that answers 403 to every request: the /admin/
      route of Switchyard builds without the `respond` action points there.
      Its requests are logged but are not the pool's.

  run --proxy NAME=PORT... --log FILE [--csv FILE] [--only REGEX] ...
      Sends every probe to every proxy, one connection per probe, and prints
      the table: the answer per proxy (status line(s), or close / reset /
      timeout), what reached an origin, and a verdict against the probe's
      acceptable answers.

  list [--only REGEX]
      The probes, their acceptable answers and why (the same text as the
      `why` of each probe below).

Verdicts. A probe lists alternatives: a status pattern ("400", "2xx",
"200+403+200" for three pipelined responses, "close", "h2:200"...) and what
may reach the origins with it:
  no   nothing at all;
  cut  no complete request (a head whose body was then aborted is allowed:
       a proxy that streams bodies may have sent it before the error);
  yes  at least one complete request (the answer came from the pool);
  any  anything, or a check of its own on the logged requests.
Three rules hold for every probe, whatever the status:
  - /smuggled, the target of the request hidden in smuggling bodies, never
    reaches an origin;
  - no path under /admin/ reaches the pool once percent-decoded, with
    slashes merged and dot segments removed (the /admin/ route answers 403
    without the pool in every configuration);
  - the origin never receives framing it cannot parse.
"""

import argparse
import csv
import json
import os
import re
import select
import socket
import sys
import threading
import time
from urllib.parse import unquote_to_bytes

# ------------------------------------------------------------------ constants

HOST = "example.com"
# The hidden request of the smuggling probes; it must never reach an origin.
SMUGGLED_PATH = "/smuggled"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
# How long a probe waits for an answer after its last byte is sent (seconds;
# --timeout). Long enough for a loaded 2-core machine, short enough that a
# proxy waiting for bytes that never come shows as "timeout" quickly.
DEFAULT_TIMEOUT = 3.0
# After a complete response, how long to wait for more bytes: a desynchronised
# proxy answers the leftover of a smuggling body as a second request.
EXTRA_WAIT = 0.25
# Before reading the origin log: a request forwarded just before the proxy
# closed the client connection may still be on its way.
SETTLE = 0.1
# How long one write of a probe may block: a proxy that stops reading a
# 100 KB request makes the probe stop sending, not hang.
SEND_TIMEOUT = 5.0
# Cells longer than this are cut in the table (the CSV has them whole).
CELL_MAX = 28
# The relay gives up parsing a connection whose request head exceeds this (it
# keeps relaying): a proxy that forwards 100 KB headers is logged, a runaway
# stream is not buffered forever.
RELAY_MAX_HEAD = 4 * 1024 * 1024


def b(x):
    """str → bytes (latin-1, so every byte value can be written)."""
    return x if isinstance(x, bytes) else x.encode("latin-1")


# ===================================================================== relay

class RelayLog:
    """One JSON object per line, from every relay thread."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.req = 0

    def next_id(self):
        with self.lock:
            self.req += 1
            return self.req

    def write(self, rec):
        rec["t"] = round(time.time(), 4)
        line = json.dumps(rec, ensure_ascii=True)
        with self.lock:
            self.f.write(line + "\n")
            self.f.flush()


HEAD_END = re.compile(rb"\r?\n\r?\n")


class RequestSplitter:
    """Splits the bytes a proxy sends to an origin into requests, the way an
    origin would frame them, and logs each one: "req" records when its head
    is complete, "done" when its body is, "bad" when the framing is broken
    (after which the connection is only relayed, no longer parsed)."""

    def __init__(self, log, port, conn, on_done=None):
        self.log, self.port, self.conn = log, port, conn
        self.on_done = on_done  # the deny origin answers each request here
        self.buf = b""
        self.state = "head"
        self.left = 0  # bytes of Content-Length body or chunk data still to come
        self.body = 0
        self.req = None

    def bad(self, why):
        self.log.write({"bad": why, "req": self.req, "port": self.port, "conn": self.conn,
                        "deny": self.on_done is not None})
        self.state = "dead"
        self.buf = b""

    def done(self):
        self.log.write({"done": self.req, "body": self.body})
        self.state = "head"
        if self.on_done:
            self.on_done()

    def line(self):
        """The next line (without its CRLF or LF), or None if incomplete."""
        i = self.buf.find(b"\n")
        if i < 0:
            return None
        line, self.buf = self.buf[:i], self.buf[i + 1:]
        return line[:-1] if line.endswith(b"\r") else line

    def feed(self, data):
        if self.state == "dead":
            return
        self.buf += data
        while self.step():
            pass

    def step(self):
        """One parsing step; False when it needs more bytes."""
        st = self.state
        if st == "dead":
            return False
        if st == "head":
            # RFC 9112 §2.2: empty lines before a request line are ignored.
            stripped = self.buf.lstrip(b"\r\n")
            if not stripped:
                self.buf = stripped
                return False
            self.buf = stripped
            m = HEAD_END.search(self.buf)
            if not m:
                if len(self.buf) > RELAY_MAX_HEAD:
                    self.bad("head larger than %d bytes" % RELAY_MAX_HEAD)
                return False
            head, self.buf = self.buf[:m.start()], self.buf[m.end():]
            self.start_request(head)
            return True
        if st == "cl":
            n = min(self.left, len(self.buf))
            self.buf, self.left, self.body = self.buf[n:], self.left - n, self.body + n
            if self.left == 0:
                self.done()
                return True
            return False
        if st == "size":
            line = self.line()
            if line is None:
                return False
            size = line.split(b";", 1)[0].rstrip(b" \t")
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size):
                self.bad("chunk size %r" % line[:40])
                return False
            self.left = int(size, 16)
            self.state = "data" if self.left else "trailers"
            return True
        if st == "data":
            n = min(self.left, len(self.buf))
            self.buf, self.left, self.body = self.buf[n:], self.left - n, self.body + n
            if self.left == 0:
                self.state = "crlf"
                return True
            return False
        if st == "crlf":
            if len(self.buf) < 2:
                return False
            if self.buf[:2] != b"\r\n":
                self.bad("no CRLF after chunk data: %r" % self.buf[:10])
                return False
            self.buf = self.buf[2:]
            self.state = "size"
            return True
        if st == "trailers":
            line = self.line()
            if line is None:
                return False
            if line == b"":
                self.done()
            return True
        raise AssertionError(st)

    def start_request(self, head):
        lines = [l[:-1] if l.endswith(b"\r") else l for l in head.split(b"\n")]
        request_line = lines[0].decode("latin-1")
        parts = request_line.split(" ")
        headers, fold = [], False
        for l in lines[1:]:
            if l[:1] in (b" ", b"\t"):
                fold = True
                continue
            name, _, value = l.partition(b":")
            headers.append([name.decode("latin-1"), value.strip(b" \t").decode("latin-1")[:200]])
        self.req = self.log.next_id()
        self.body = 0
        self.log.write({
            "req": self.req, "port": self.port, "conn": self.conn,
            "line": request_line[:300],
            "method": parts[0][:100] if parts else "",
            "target": parts[1][:300] if len(parts) > 1 else "",
            "version": parts[2] if len(parts) > 2 else "",
            "headers": headers, "fold": fold, "nul": b"\0" in head,
            "deny": self.on_done is not None,
        })
        te = ",".join(v for n, v in headers if n.lower() == "transfer-encoding")
        codings = [c.strip().lower() for c in te.split(",") if c.strip()]
        cls = [v for n, v in headers if n.lower() == "content-length"]
        if codings:
            if codings[-1] != "chunked":
                self.bad("transfer-encoding %r, chunked not final" % te)
                return
            self.state = "size"
        elif cls:
            values = {v.strip() for cl in cls for v in cl.split(",")}
            if len(values) != 1 or not all(re.fullmatch(r"[0-9]{1,18}", v) for v in values):
                self.bad("content-length %r" % cls)
                return
            self.left = int(values.pop())
            self.state = "cl"
            if self.left == 0:
                self.done()
        else:
            self.done()


def pump(src, dst, splitter=None):
    """Copies src to dst until EOF (then half-closes dst) or an error (then
    closes both)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if splitter:
                splitter.feed(data)
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay_conn(client, target, log, port, conn):
    try:
        upstream = socket.create_connection(target)
    except OSError as e:
        log.write({"relay_error": str(e), "port": port})
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    up = threading.Thread(target=pump, args=(client, upstream, RequestSplitter(log, port, conn)), daemon=True)
    up.start()
    pump(upstream, client)
    up.join()
    client.close()
    upstream.close()


FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\nforbidden\n"


def deny_conn(client, log, port, conn):
    """The deny origin: 403 to every request, for builds whose /admin/ route
    cannot answer by itself (no `respond` action). Not part of the pool."""
    splitter = RequestSplitter(log, port, conn, on_done=lambda: client.sendall(FORBIDDEN))
    try:
        while True:
            data = client.recv(65536)
            if not data:
                break
            splitter.feed(data)
            if splitter.state == "dead":
                break
    except OSError:
        pass
    client.close()


def relay_listen(listen, target, log, counter):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen))
    srv.listen(512)
    while True:
        client, _ = srv.accept()
        conn = counter.next()
        if target is None:
            threading.Thread(target=deny_conn, args=(client, log, listen, conn), daemon=True).start()
        else:
            threading.Thread(target=relay_conn, args=(client, target, log, listen, conn), daemon=True).start()


class Counter:
    """Connection ids, shared by the listener threads."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            self.n += 1
            return self.n


def cmd_relay(args):
    log = RelayLog(args.log)
    shared = Counter()
    threads = []
    listeners = [(int(l), ("127.0.0.1", int(t))) for l, _, t in (p.partition(":") for p in args.pair)]
    if args.deny:
        listeners.append((args.deny, None))
    for listen, target in listeners:
        t = threading.Thread(target=relay_listen, args=(listen, target, log, shared), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


# ================================================================ the client

class H1Responses:
    """Incremental parser of the HTTP/1.x responses a proxy sends back."""

    def __init__(self):
        self.buf = b""
        self.statuses = []  # one per complete response
        self.partial = None  # status of a response still incomplete, or "head"
        self.raw = False  # bytes that are no status line (an HTTP/0.9 answer)
        self.upgraded = False  # 101 or 2xx to CONNECT: no more HTTP after it
        self._body = None  # ("cl", n) | ("chunked", state, n) | ("close",)

    def feed(self, data):
        self.buf += data
        while self._step():
            pass

    def complete_at_eof(self):
        if self._body and self._body[0] == "close":
            self.statuses.append(self.partial)
            self.partial, self._body = None, None

    def _finish(self):
        self.statuses.append(self.partial)
        self.partial, self._body = None, None

    def _step(self):
        if self.raw or self.upgraded:
            return False
        if self._body is None:
            if not self.buf:
                return False
            if not b"HTTP/"[: len(self.buf)] == self.buf[:5]:
                self.raw = True
                return False
            self.partial = self.partial or "head"
            m = HEAD_END.search(self.buf)
            if not m:
                return False
            head, self.buf = self.buf[:m.start()], self.buf[m.end():]
            lines = head.split(b"\n")
            sm = re.match(rb"HTTP/\d\.\d (\d{3})", lines[0])
            if not sm:
                self.raw = True
                return False
            status = sm.group(1).decode()
            self.partial = status
            headers = {}
            for l in lines[1:]:
                n, _, v = l.partition(b":")
                headers.setdefault(n.strip().lower(), []).append(v.strip())
            code = int(status)
            if code == 101:
                self._finish()
                self.upgraded = True
                return False
            if 100 <= code < 200:  # 100 Continue and friends: not the answer
                self.partial = None
                return True
            if code in (204, 304):
                self._finish()
                return True
            te = b",".join(headers.get(b"transfer-encoding", [])).lower()
            if te.endswith(b"chunked"):
                self._body = ["chunked", "size", 0]
            elif b"content-length" in headers:
                try:
                    n = int(headers[b"content-length"][0])
                except ValueError:
                    n = 0
                self._body = ["cl", n]
                if n == 0:
                    self._finish()
            else:
                self._body = ["close"]
            return True
        kind = self._body[0]
        if kind == "close":
            self.buf = b""
            return False
        if kind == "cl":
            n = min(self._body[1], len(self.buf))
            self.buf, self._body[1] = self.buf[n:], self._body[1] - n
            if self._body[1] == 0:
                self._finish()
                return True
            return False
        # chunked
        st = self._body[1]
        if st in ("size", "trailer"):
            i = self.buf.find(b"\n")
            if i < 0:
                return False
            line, self.buf = self.buf[:i].rstrip(b"\r"), self.buf[i + 1:]
            if st == "trailer":
                if line == b"":
                    self._finish()
                return True
            try:
                n = int(line.split(b";")[0], 16)
            except ValueError:
                self.raw = True
                return False
            self._body[1:] = ["data", n + 2] if n else ["trailer", 0]
            return True
        n = min(self._body[2], len(self.buf))
        self.buf, self._body[2] = self.buf[n:], self._body[2] - n
        if self._body[2] == 0:
            self._body[1] = "size"
            return True
        return False


class Conn:
    """One client connection: steps sent by a thread while the main thread
    reads, so a proxy that answers (and closes) before the request is all
    sent still has its answer read."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The timeout bounds the sender's writes (a proxy that stops reading);
        # reads wait in select, so the two threads never share a timeout.
        self.sock.settimeout(SEND_TIMEOUT)
        self.sent_at = None  # when the last step ran
        self.send_error = None

    def run_steps(self, steps):
        try:
            for step in steps:
                kind = step[0]
                if kind == "send":
                    self.sock.sendall(step[1])
                elif kind == "bytewise":  # ("bytewise", data, pause)
                    for i in range(len(step[1])):
                        self.sock.sendall(step[1][i:i + 1])
                        time.sleep(step[2])
                elif kind == "pause":
                    time.sleep(step[1])
                elif kind == "shut":
                    self.sock.shutdown(socket.SHUT_WR)
                else:
                    raise AssertionError(kind)
        except OSError as e:
            self.send_error = e.__class__.__name__
        self.sent_at = time.monotonic()

    def start(self, steps):
        t = threading.Thread(target=self.run_steps, args=(steps,), daemon=True)
        t.start()
        return t

    def recv(self, until):
        """Bytes, b"" at EOF, None when `until` (monotonic) passed; raises
        ConnectionResetError."""
        left = until - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([self.sock], [], [], min(left, 0.05))
        return self.sock.recv(65536) if ready else None


def exchange_h1(port, steps, timeout):
    """Runs the steps and reads responses: (answer, detail)."""
    try:
        c = Conn(port)
    except OSError as e:
        return "refused", str(e)
    sender = c.start(steps)
    r = H1Responses()
    end, extra_until, got = None, None, b""
    while True:
        now = time.monotonic()
        if c.sent_at is not None and end is None:
            end = c.sent_at + timeout
        if end is not None and now >= end:
            end = "timeout"
            break
        if extra_until is not None and now >= extra_until and r.partial is None and c.sent_at is not None:
            end = "open"
            break
        try:
            data = c.recv(now + 0.05)
        except ConnectionResetError:
            end = "reset"
            break
        except OSError as e:
            end = "error:" + e.__class__.__name__
            break
        if data is None:
            continue
        if data == b"":
            end = "close"
            r.complete_at_eof()
            break
        got += data[: 200 - len(got)] if len(got) < 200 else b""
        before = len(r.statuses)
        r.feed(data)
        if len(r.statuses) > before:
            extra_until = time.monotonic() + EXTRA_WAIT
        if r.raw or r.upgraded:
            extra_until = time.monotonic() + EXTRA_WAIT
    sender.join(timeout=5)
    c.sock.close()
    parts = list(r.statuses)
    if r.partial is not None:
        parts.append("%s(cut)" % r.partial if r.partial != "head" else "cut-head")
    if r.raw:
        parts.append("raw")
    answer = "+".join(parts) if parts else end
    detail = "end=%s%s first=%r" % (end, " send=" + c.send_error if c.send_error else "", got[:80])
    return answer, detail


# ------------------------------------------------------------------- HTTP/2

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The only Huffman codes a :status value needs (RFC 7541 Appendix B).
HUFFMAN_DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
                  "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9"}
# RFC 7541 Appendix A: static table entries 8..14 are ":status" with these values.
STATIC_STATUS = {8: "200", 9: "204", 10: "206", 11: "304", 12: "400", 13: "404", 14: "500"}


def h2_frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_int(value, prefix, first=0):
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out, value = [first | limit], value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes(out + [value])


def hpack_block(fields):
    """Every field as a literal without indexing, new name, no Huffman."""
    out = b""
    for name, value in fields:
        name, value = b(name), b(value)
        out += b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value
    return out


def read_hpack_int(data, i, prefix):
    limit = (1 << prefix) - 1
    v = data[i] & limit
    i += 1
    if v < limit:
        return v, i
    shift = 0
    while True:
        c = data[i]
        i += 1
        v += (c & 127) << shift
        shift += 7
        if not c & 128:
            return v, i


def read_hpack_str(data, i):
    huff = data[i] & 0x80
    n, i = read_hpack_int(data, i, 7)
    s = data[i:i + n]
    if not huff:
        return s.decode("latin-1"), i + n
    bits, out, code = "".join(format(x, "08b") for x in s), "", ""
    for bit in bits:
        code += bit
        if code in HUFFMAN_DIGITS:
            out += HUFFMAN_DIGITS[code]
            code = ""
    return out, i + n


def h2_status(block):
    """The :status of a response header block (the first field, RFC 9113
    §8.3), or "?" when it is not one this decoder reads."""
    i = 0
    try:
        while i < len(block):
            c = block[i]
            if c & 0x80:  # indexed field
                idx, i = read_hpack_int(block, i, 7)
                return STATIC_STATUS.get(idx, "?")
            if c & 0xE0 == 0x20:  # dynamic table size update
                _, i = read_hpack_int(block, i, 5)
                continue
            idx, i = read_hpack_int(block, i, 6 if c & 0x40 else 4)
            if idx == 0:
                name, i = read_hpack_str(block, i)
            else:
                name = ":status" if 8 <= idx <= 14 else "?"
            value, i = read_hpack_str(block, i)
            return value if name == ":status" else "?"
    except IndexError:
        pass
    return "?"


def exchange_h2(port, fields, data, timeout):
    """Prior-knowledge HTTP/2 (RFC 9113 §3.3): preface, SETTINGS, one request
    on stream 1, then the answer: "h2:STATUS", "h2:rst(CODE)",
    "h2:goaway(CODE)", an HTTP/1 status when the proxy took the preface for
    an HTTP/1 request, or close / reset / timeout."""
    try:
        c = Conn(port)
    except OSError as e:
        return "refused", str(e)
    out = H2_PREFACE + h2_frame(4, 0, 0, b"")
    block = hpack_block(fields)
    out += h2_frame(1, 0x4 | (0 if data is not None else 0x1), 1, block)
    if data is not None:
        out += h2_frame(0, 0x1, 1, data)
    sender = c.start([("send", out)])
    buf, answer, end = b"", None, None
    while answer is None:
        if c.sent_at is not None and end is None:
            end = c.sent_at + timeout
        if end is not None and time.monotonic() >= end:
            answer = "timeout"
            break
        try:
            chunk = c.recv(time.monotonic() + 0.05)
        except OSError:
            answer = "reset"
            break
        if chunk is None:
            continue
        if chunk == b"":
            answer = "close"
            break
        buf += chunk
        if buf[:5] == b"HTTP/"[: len(buf[:5])]:
            r = H1Responses()
            r.feed(buf)
            if r.statuses or r.partial not in (None, "head"):
                answer = (r.statuses or [r.partial])[0]
            continue
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + n], buf[9 + n:]
            if kind == 4 and not flags & 1:  # SETTINGS: acknowledge
                c.sock.sendall(h2_frame(4, 1, 0, b""))
            elif kind == 1 and stream == 1:  # HEADERS
                if flags & 0x8:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & 0x20:
                    payload = payload[5:]
                answer = "h2:" + h2_status(payload)
                break
            elif kind == 3 and stream == 1:
                answer = "h2:rst(%d)" % int.from_bytes(payload[:4], "big")
                break
            elif kind == 7:
                answer = "h2:goaway(%d)" % int.from_bytes(payload[4:8], "big")
                break
    sender.join(timeout=5)
    c.sock.close()
    return answer, "first=%r" % buf[:60]


# ============================================================== the probes

def msg(*lines, body=b""):
    """A request: lines joined by CRLF, an empty line, the body."""
    return b"".join(b(l) + b"\r\n" for l in lines) + b"\r\n" + b(body)


def get(target, *headers, version="HTTP/1.1", method="GET"):
    return msg("%s %s %s" % (method, target, version), "Host: " + HOST, *headers)


def post(target, *headers, body=b""):
    return msg("POST %s HTTP/1.1" % target, "Host: " + HOST, *headers, body=body)


def chunked(*headers, body):
    return post("/public/x", "Transfer-Encoding: chunked", *headers, body=body)


def chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST = b"0\r\n\r\n"
# CL.TE: a chunked body that ends at once, the hidden request after it, and a
# Content-Length that covers both.
CLTE_BODY = LAST + SMUGGLED
# TE.CL: the hidden request as chunk data; Content-Length: 4 covers only the
# chunk-size line ("2d\r\n"), so a proxy that frames by Content-Length takes
# the hidden request for the next one.
TECL_BODY = chunk(SMUGGLED) + LAST
assert len(b"%x\r\n" % len(SMUGGLED)) == 4


class Alt:
    """One acceptable answer: a status pattern and what may reach the
    origins with it (see the module doc)."""

    def __init__(self, status, reach=None, note=None):
        self.status = status
        if reach is None:
            reach = "yes" if re.match(r"(h2:)?[23]", status) else "cut"
        self.reach = reach
        self.note = note

    def label(self):
        if self.note:
            return self.note
        if self.reach in ("cut", "no") or self.status in ("close",):
            return self.status
        return self.status + (">pool" if self.reach == "yes" else "")


def A(status, reach=None, note=None):
    return Alt(status, reach, note)


# HTTP/1 answers of a proxy that does not speak prior-knowledge HTTP/2 and
# takes the preface for an HTTP/1 request with method PRI (RFC 9113 §3.3: a
# client uses prior knowledge at its own risk): refused, never forwarded.
H2_REFUSED = [A(s, "no", note="h1 refusal") for s in ("400", "405", "501", "505", "close")]
REJECT = [A("400")]


class Probe:
    def __init__(self, cls, name, send, want, why, h2=None):
        self.cls, self.name, self.why = cls, name, why
        self.steps = send if isinstance(send, list) else [("send", send)]
        self.want = want
        self.h2 = h2  # (fields, data) for an HTTP/2 probe

    def expected(self):
        labels = []
        for a in self.want:
            if a.label() not in labels:
                labels.append(a.label())
        return "|".join(labels)


def header_names(e):
    return [n.lower() for n, _ in e["headers"]]


def no_header(name):
    return lambda es: bool(es) and all(name not in header_names(e) for e in es) and all(e["done"] for e in es)


def probes():
    P = []

    def add(cls, name, send, want, why, h2=None):
        P.append(Probe(cls, name, send, want, why, h2))

    # ---------------------------------------------------------------- control
    c = "control"
    add(c, "GET /public/x", get("/public/x"), [A("200")], "the pool route works")
    add(c, "GET /admin/x", get("/admin/x"), [A("403", "no")], "the /admin/ route answers 403 without the pool")
    add(c, "POST /public/x, CL body", post("/public/x", "Content-Length: 5", body="hello"), [A("200")],
        "a plain body")
    add(c, "POST /public/x, chunked body", chunked(body=chunk(b"hello") + LAST), [A("200")],
        "a plain chunked body")

    # --------------------------------------------------------------- smuggling
    s = "smuggling"
    add(s, "CL.TE (CL covers a hidden request)",
        post("/public/x", "Content-Length: %d" % len(CLTE_BODY), "Transfer-Encoding: chunked", body=CLTE_BODY),
        REJECT, "RFC 9112 §6.1 lets a server reject CL+TE; the issue requires 400")
    add(s, "TE.CL (CL: 4, hidden request in chunk)",
        post("/public/x", "Transfer-Encoding: chunked", "Content-Length: 4", body=TECL_BODY),
        REJECT, "CL+TE in either order: 400")
    tecl = [("TE.TE: xchunked", "Transfer-Encoding: xchunked", [A("400"), A("501")],
             "RFC 9112 §6.1: an unknown coding is 501; with CL present, 400"),
            ("TE.TE: space before colon", "Transfer-Encoding : chunked", REJECT,
             "RFC 9112 §5.1: whitespace between name and colon MUST be rejected with 400"),
            ("TE.TE: tab before value", "Transfer-Encoding:\tchunked", REJECT,
             "tab is OWS, so this is chunked + CL: 400"),
            ("TE.TE: CHUNKED uppercase", "Transfer-Encoding: CHUNKED", REJECT,
             "coding names are case-insensitive (RFC 9112 §7), so chunked + CL: 400"),
            ("TE.TE: quoted \"chunked\"", 'Transfer-Encoding: "chunked"', [A("400"), A("501")],
             "not a coding name: unknown coding (501) or invalid (400)"),
            ("TE.TE: vertical tab", "Transfer-Encoding:\x0bchunked", [A("400"), A("501")],
             "VT is not OWS: an invalid value or unknown coding"),
            ("TE.TE: chunked then x", "Transfer-Encoding: chunked\r\nTransfer-Encoding: x", [A("400"), A("501")],
             "RFC 9112 §6.3: chunked not final in a request: 400 (x unknown: 501)"),
            ("TE.TE: obs-fold", "Transfer-Encoding: x\r\n chunked", [A("400"), A("501")],
             "RFC 9112 §5.2: obs-fold is rejected (400) or unfolded to 'x chunked' (unknown: 501)"),
            ]
    for name, header, want, why in tecl:
        add(s, name, post("/public/x", header, "Content-Length: 4", body=TECL_BODY), want, why)
    add(s, "TE.TE: Transfer_Encoding",
        post("/public/x", "Transfer_Encoding: chunked", "Content-Length: %d" % len(CLTE_BODY), body=CLTE_BODY),
        [A("400"), A("200", lambda es: bool(es) and all(e["done"] and e["body"] == len(CLTE_BODY) for e in es),
                     note="200>pool(CL)")],
        "not Transfer-Encoding: the body is framed by CL, hidden request included; or refused")
    add(s, "TE: identity, chunked", chunked_te("identity, chunked", chunk(SMUGGLED) + LAST),
        [A("400"), A("501")], "identity is no longer a coding (RFC 9112 §7): 501, or 400")
    add(s, "two TE: chunked lines", chunked_te(["chunked", "chunked"], chunk(SMUGGLED) + LAST),
        [A("400"), A("501")], "chunked twice (RFC 9112 §6.1: MUST NOT apply more than once): 400")
    add(s, "TE: chunked, chunked", chunked_te("chunked, chunked", chunk(SMUGGLED) + LAST),
        [A("400"), A("501")], "as two lines: chunked applied twice: 400")
    add(s, "TE: chunked, gzip (not final)", chunked_te("chunked, gzip", chunk(SMUGGLED) + LAST),
        [A("400"), A("501")], "RFC 9112 §6.3: chunked not final in a request: MUST 400")
    add(s, "TE on HTTP/1.0",
        msg("POST /public/x HTTP/1.0", "Host: " + HOST, "Transfer-Encoding: chunked",
            "Content-Length: 4", body=TECL_BODY),
        REJECT, "RFC 9112 §6.1: TE in HTTP/1.0 MUST be treated as faulty framing: 400")
    body = b"AAAA" + SMUGGLED
    add(s, "two CL, different values",
        post("/public/x", "Content-Length: 4", "Content-Length: %d" % len(body), body=body),
        REJECT, "RFC 9112 §6.3: invalid Content-Length: MUST 400")
    add(s, "CL: 4, 49 (list)", post("/public/x", "Content-Length: 4, %d" % len(body), body=body),
        REJECT, "RFC 9112 §6.3: a list of different values: 400")
    add(s, "CL: 5, 5 (same value)", post("/public/x", "Content-Length: 5, 5", body="hello"),
        [A("200"), A("400")], "RFC 9110 §8.6: identical values MAY be taken as one, or refused")
    add(s, "CL: +4", post("/public/x", "Content-Length: +4", body=body), REJECT,
        "not 1*DIGIT (RFC 9110 §8.6): 400")
    add(s, "CL: -1", post("/public/x", "Content-Length: -1", body=body), REJECT, "not 1*DIGIT: 400")
    add(s, "CL: 0x4", post("/public/x", "Content-Length: 0x4", body=body), REJECT, "not 1*DIGIT: 400")
    add(s, "CL: 20 digits (overflow)", post("/public/x", "Content-Length: 99999999999999999999", body=body),
        [A("400"), A("413")], "larger than any length: 400 (or 413)")
    add(s, "CL: 004 (leading zeros)", post("/public/x", "Content-Length: 004", body=b"AAAA"),
        [A("200"), A("400")], "1*DIGIT allows leading zeros: 200 (400 tolerated)")
    add(s, "GET with CL body", get("/public/x", "Content-Length: %d" % len(SMUGGLED)) + SMUGGLED,
        [A("200"), A("400")], "a GET body is framed by CL like any other (RFC 9110 §9.3.1):"
        " the hidden request is body, not a request")

    # ----------------------------------------------------------------- chunked
    k = "chunked"
    add(k, "size 17 hex digits (overflow)", chunked(body=b"10000000000000005\r\nhello\r\n" + LAST), REJECT,
        "a size beyond 64 bits: malformed framing, 400 (RFC 9112 §7.1)")
    add(k, "size -5", chunked(body=b"-5\r\nhello\r\n" + LAST), REJECT, "chunk-size is 1*HEXDIG: 400")
    add(k, "size zz (junk)", chunked(body=b"zz\r\nhello\r\n" + LAST), REJECT, "chunk-size is 1*HEXDIG: 400")
    add(k, "size 0x5", chunked(body=b"0x5\r\nhello\r\n" + LAST), REJECT, "chunk-size is 1*HEXDIG: 400")
    add(k, "size 5x (trailing junk)", chunked(body=b"5x\r\nhello\r\n" + LAST), REJECT, "chunk-size is 1*HEXDIG: 400")
    add(k, "missing CRLF after data", chunked(body=b"5\r\nhello" + LAST), REJECT,
        "chunk data is followed by CRLF (RFC 9112 §7.1): 400")
    add(k, "data longer than size", chunked(body=b"3\r\nhello\r\n" + LAST), REJECT,
        "3 bytes then 'lo' instead of CRLF: 400")
    add(k, "100 KB chunk extension", chunked(body=b"5;" + b"a" * 100_000 + b"\r\nhello\r\n" + LAST),
        [A("400"), A("413"), A("431")], "an unbounded extension is a resource attack: a parser must cap it")
    add(k, "bare LF line ends", chunked(body=b"5\nhello\n0\n\n"), REJECT,
        "chunk lines end in CRLF; bare LF there is a known desync vector: 400")
    add(k, "bare LF after data", chunked(body=b"5\r\nhello\n0\r\n\r\n"), REJECT, "CRLF required after data: 400")
    add(k, "size with leading zeros", chunked(body=b"0005\r\nhello\r\n" + LAST), [A("200")],
        "1*HEXDIG allows leading zeros: valid")
    add(k, "chunk extension name=value", chunked(body=b"5;name=value\r\nhello\r\n" + LAST), [A("200")],
        "valid chunk-ext (RFC 9112 §7.1.1): ignored")
    add(k, "trailer field", chunked(body=b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"), [A("200")],
        "valid trailer section (RFC 9112 §7.1.2)")
    add(k, "no last chunk, then close", [("send", chunked(body=b"5\r\nhello\r\n")), ("shut",)],
        [A("400"), A("close"), A("timeout", note="timeout")],
        "the body never ends: 400, or close; never a complete request at the origin")

    # ------------------------------------------------------ request line / headers
    r = "request-line"
    add(r, "8 KiB method", msg("A" * 8192 + " /public/x HTTP/1.1", "Host: " + HOST),
        [A("501"), A("400"), A("405"), A("414"), A("431")],
        "RFC 9112 §3: a method longer than any implemented SHOULD get 501; refused, not forwarded")
    add(r, "lowercase method get", msg("get /public/x HTTP/1.1", "Host: " + HOST),
        [A("400"), A("405"), A("501"),
         A("2xx", lambda es: bool(es) and all(e["method"] == "get" for e in es), note="fwd as get")],
        "methods are case-sensitive (RFC 9110 §9.1): unknown method refused, or forwarded"
        " unchanged (never as GET)")
    add(r, "HTTP/1.2", get("/public/x", version="HTTP/1.2"), [A("200")],
        "RFC 9110 §2.5: a higher minor version is served as the highest supported (1.1)")
    add(r, "HTTP/1.0", get("/public/x", version="HTTP/1.0"), [A("200")], "plain HTTP/1.0")
    add(r, "HTTP/1.0 without Host", msg("GET /public/x HTTP/1.0"), [A("200")], "Host is optional in 1.0")
    add(r, "HTTP/2.0 in an HTTP/1 line", get("/public/x", version="HTTP/2.0"), [A("505"), A("400")],
        "major version 2 is not HTTP/1 (RFC 9110 §15.6.6): 505")
    add(r, "HTTP/1.10", get("/public/x", version="HTTP/1.10"), [A("400"), A("505")],
        "HTTP-version is DIGIT.DIGIT (RFC 9112 §2.3): invalid, 400")
    add(r, "http/1.1 lowercase", get("/public/x", version="http/1.1"), [A("400")],
        "HTTP-name is case-sensitive (RFC 9112 §2.3): 400")
    add(r, "HTTP/0.9 simple request", b"GET /public/x\r\n",
        [A("400", "any"), A("505", "any"), A("close", "any"), A("raw", "any", note="0.9 body")],
        "HTTP/0.9 is not HTTP/1.1: refused (400/505/close), or an HTTP/0.9 answer as nginx gives")
    add(r, "absolute-form", msg("GET http://%s/public/x HTTP/1.1" % HOST, "Host: " + HOST), [A("200")],
        "RFC 9112 §3.2.2: a server MUST accept absolute-form")
    add(r, "absolute-form, other Host",
        msg("GET http://a.example/public/x HTTP/1.1", "Host: b.example"),
        [A("200", lambda es: bool(es) and all(
            [v for n, v in e["headers"] if n.lower() == "host"] == ["a.example"] for e in es),
            note="200,Host=a.example"), A("400")],
        "RFC 9112 §3.2.2: the target's authority wins, Host is replaced by it")
    add(r, "absolute-form /admin/x", msg("GET http://%s/admin/x HTTP/1.1" % HOST, "Host: " + HOST),
        [A("403", "no")], "routed on the target's path: 403")
    add(r, "CONNECT host:port", msg("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"),
        [A("405", "no"), A("501", "no")], "no tunnel configured: 405 (the issue; 501 equally conformant)")
    add(r, "OPTIONS *", msg("OPTIONS * HTTP/1.1", "Host: " + HOST), [A("200", "no"), A("2xx", "any")],
        "RFC 9110 §9.3.7: OPTIONS * is valid: answered 200, or forwarded")
    add(r, "target without leading /", msg("GET public/x HTTP/1.1", "Host: " + HOST), REJECT,
        "not origin-form, absolute-form, authority-form or *: 400")
    add(r, "space in target", msg("GET /public/a b HTTP/1.1", "Host: " + HOST), [A("400"), A("301", "no")],
        "RFC 9112 §3.2: an invalid request-line: 400 (or a 301 to the encoded target)")
    add(r, "NUL in target", msg("GET /public/a\0b HTTP/1.1", "Host: " + HOST), REJECT,
        "NUL is not allowed in a URI: 400")
    add(r, "100 KB target", get("/public/" + "a" * 100_000), [A("414"), A("400"), A("431")],
        "too long a target: 414 (RFC 9110 §15.5.15)")
    add(r, "empty line before request", b"\r\n" + get("/public/x"), [A("200")],
        "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line")

    h = "headers"
    add(h, "header without colon", get("/public/x", "X-No-Colon"),
        [A("400"), A("2xx", no_header("x-no-colon"), note="200,dropped")],
        "not a field line (RFC 9112 §5): 400, or dropped (nginx's ignore_invalid_headers)")
    add(h, "space before colon", get("/public/x", "X-Test : 1"), REJECT,
        "RFC 9112 §5.1: MUST be rejected with 400")
    add(h, "empty header name", get("/public/x", ": x"), REJECT, "field-name is 1*tchar: 400")
    add(h, "invalid char in name", get("/public/x", "X(Test): 1"),
        [A("400"), A("2xx", no_header("x(test)"), note="200,dropped")],
        "not a token (RFC 9110 §5.1): 400, or dropped (nginx's ignore_invalid_headers)")
    add(h, "obs-fold", get("/public/x", "X-Fold: a", " b"),
        [A("400"), A("2xx", lambda es: bool(es) and not any(e["fold"] for e in es), note="200,unfolded")],
        "RFC 9112 §5.2: MUST reject with 400 or replace the fold with SP before forwarding")
    add(h, "leading whitespace, first header", msg("GET /public/x HTTP/1.1", " X-Ws: 1", "Host: " + HOST),
        [A("400"), A("2xx", no_header("x-ws"), note="200,line dropped")],
        "RFC 9112 §2.2: MUST reject, or ignore that line")
    add(h, "NUL in header value", get("/public/x", "X-Nul: a\0b"),
        [A("400"), A("2xx", lambda es: bool(es) and not any(e["nul"] for e in es), note="200,no NUL fwd")],
        "RFC 9110 §5.5: NUL MUST be rejected or replaced with SP")
    add(h, "bare CR in header value", get("/public/x", "X-Cr: a\rb"),
        [A("400"), A("2xx", no_header("b"), note="200,CR replaced")],
        "RFC 9112 §2.2: a bare CR MUST be rejected or replaced with SP")
    add(h, "bare LF line ends (head)", b"GET /public/x HTTP/1.1\nHost: example.com\n\n",
        [A("200"), A("400")], "RFC 9112 §2.2: a recipient MAY take LF as a line end")
    add(h, "100 KB header", get("/public/x", "X-Big: " + "a" * 100_000), [A("431"), A("400")],
        "beyond any header limit: 431 (RFC 6585) or 400 (nginx)")
    add(h, "200 headers", get("/public/x", *["X-H%d: %d" % (i, i) for i in range(200)]),
        [A("431"), A("400"),
         A("xxx", lambda es: bool(es) and all(sum(n.lower().startswith("x-h") for n in header_names(e)) >= 200
                                               for e in es), note="all fwd")],
        "a limit (431/400) or all of them forwarded (whatever the origin then answers); never some"
        " silently dropped")
    add(h, "missing Host (1.1)", msg("GET /public/x HTTP/1.1"), REJECT,
        "RFC 9112 §3.2: MUST respond 400")
    add(h, "two Host headers", get("/public/x", "Host: other.example"), REJECT,
        "RFC 9112 §3.2: MUST respond 400")
    add(h, "invalid Host value", msg("GET /public/x HTTP/1.1", "Host: exa mple"), REJECT,
        "RFC 9112 §3.2: an invalid Host value MUST get 400")
    add(h, "hop-by-hop via Connection", get("/public/x", "Connection: X-Hop", "X-Hop: 1"),
        [A("2xx", no_header("x-hop"), note="200,X-Hop removed")],
        "RFC 9110 §7.6.1: fields named in Connection are removed before forwarding")

    # ------------------------------------------------------------------- paths
    p = "paths"
    admin = [A("403", "no"), A("400", "no")]
    why_admin = "normalised before routing: the 403 route, or refused; never the pool as an admin path"
    for target in ("/public/../admin/x", "/public/%2e%2e/admin/x", "/public/.%2e/admin/x",
                   "/public/..%2fadmin/x", "//admin/x", "/./admin/x", "/public/./../admin/x",
                   "/%61dmin/x", "/admin%2fx"):
        add(p, target, get(target), admin, why_admin)
    add(p, "/..", get("/.."), REJECT, "climbing above the root: 400 (nginx)")
    add(p, "/%2e%2e/x", get("/%2e%2e/x"), REJECT, "climbing above the root: 400")
    add(p, "/public/../../x", get("/public/../../x"), REJECT, "climbing above the root: 400")
    add(p, "/public\\..\\admin\\x", get("/public\\..\\admin\\x"),
        [A("400"), A("403", "no"), A("2xx", lambda es: bool(es) and all("\\" in e["target"] for e in es),
                                         note="fwd verbatim")],
        "backslash is not a separator (RFC 3986): refused (invalid URI char), or forwarded as is")
    add(p, "/public/..\\admin/x", get("/public/..\\admin/x"),
        [A("400"), A("403", "no"), A("2xx", lambda es: bool(es) and all("\\" in e["target"] for e in es),
                                         note="fwd verbatim")],
        "as above: '..\\admin' is one segment, not a dot segment")
    add(p, "/public/x?a=/../admin/x", get("/public/x?a=/../admin/x"),
        [A("200", lambda es: bool(es) and all(e["target"].endswith("?a=/../admin/x") for e in es),
           note="200,query kept")], "the query is not a path: forwarded untouched")

    # ------------------------------------------------------------------ clients
    o = "clients"
    # The origin waits 300 ms (its delay knob) so that the FIN always arrives
    # while the proxy waits for the response: without it, whether a proxy
    # that aborts on a client FIN answers would depend on a race.
    add(o, "half-close after request", [("send", get("/public/x?delay=300ms")), ("shut",)], [A("200")],
        "a client may half-close after its request (RFC 9112 §9.6): still answered")
    add(o, "half-close after POST body",
        [("send", post("/public/x?delay=300ms", "Content-Length: 5", body="hello")), ("shut",)], [A("200")],
        "as above, with a body")
    add(o, "pipelining, 3 GETs", get("/public/a") + get("/public/b") + get("/public/c"),
        [A("200+200+200")], "RFC 9112 §9.3.2: pipelined requests are answered in order")
    add(o, "pipelining, middle /admin/", get("/public/a") + get("/admin/x") + get("/public/c"),
        [A("200+403+200")], "each pipelined request is routed on its own")
    add(o, "pipelining, chunked POST + GET",
        chunked(body=chunk(b"hello") + LAST) + get("/public/b"), [A("200+200")],
        "the chunked body ends where its last chunk says")
    add(o, "1-byte writes, GET", [("bytewise", get("/public/x"), 0.001)], [A("200")],
        "TCP is a stream: any split is the same request")
    add(o, "1-byte writes, chunked POST",
        [("bytewise", chunked(body=chunk(b"hello") + LAST), 0.001)], [A("200")], "as above, with a body")
    add(o, "Upgrade: h2c (HTTP/1.1)",
        get("/public/x", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA"),
        [A("200"), A("101", "any")], "RFC 9113 §3.1 deprecates h2c upgrade: served as HTTP/1.1 (or 101)")

    # ------------------------------------------------------------------- HTTP/2
    t = "h2c"
    base = [(":method", "GET"), (":scheme", "http"), (":authority", HOST)]
    add(t, "prior knowledge, GET /public/x", None, [A("h2:200")] + H2_REFUSED,
        "RFC 9113 §3.3: served over h2, or refused as HTTP/1 (never forwarded)",
        h2=(base + [(":path", "/public/x")], None))
    add(t, "prior knowledge, GET /admin/x", None, [A("h2:403", "no")] + H2_REFUSED,
        "the same routes over h2", h2=(base + [(":path", "/admin/x")], None))
    add(t, "prior knowledge, /public/../admin/x", None,
        [A("h2:403", "no"), A("h2:400", "no"), A("h2:rst(1)", "no"), A("h2:goaway(1)", "no")] + H2_REFUSED,
        "the same normalisation over h2", h2=(base + [(":path", "/public/../admin/x")], None))
    add(t, "h2 transfer-encoding: chunked", None,
        [A("h2:400", "no"), A("h2:rst(1)", "no"), A("h2:goaway(1)", "no")] + H2_REFUSED,
        "RFC 9113 §8.2.2: a connection-specific field makes the request malformed",
        h2=(base + [(":path", "/public/x"), ("transfer-encoding", "chunked")], None))
    add(t, "h2 uppercase field name", None,
        [A("h2:400", "no"), A("h2:rst(1)", "no"), A("h2:goaway(1)", "no")] + H2_REFUSED,
        "RFC 9113 §8.2.1: uppercase field names make the request malformed",
        h2=(base + [(":path", "/public/x"), ("X-Upper", "1")], None))
    add(t, "h2 CR LF in a field value", None,
        [A("h2:400", "no"), A("h2:rst(1)", "no"), A("h2:goaway(1)", "no")] + H2_REFUSED,
        "RFC 9113 §8.2.1: CR/LF in a value is malformed (H2.CRLF injection)",
        h2=(base + [(":path", "/public/x"), ("x-inject", "a\r\n\r\n" + SMUGGLED.decode())], None))
    add(t, "h2 content-length: 0 + DATA", None,
        [A("h2:400", "no"), A("h2:rst(1)", "no"), A("h2:goaway(1)", "no")] + H2_REFUSED,
        "RFC 9113 §8.1.1: content-length not matching DATA is malformed (H2.CL smuggling)",
        h2=([(":method", "POST"), (":scheme", "http"), (":authority", HOST), (":path", "/public/x"),
             ("content-length", "0")], SMUGGLED))
    return P


def chunked_te(te, body):
    lines = ["Transfer-Encoding: " + v for v in (te if isinstance(te, list) else [te])]
    return post("/public/x", *lines, body=body)


# ================================================================== verdicts

def remove_dot_segments(path):
    """RFC 3986 §5.2.4."""
    out = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(out) + tail


def admin_path(target):
    """Whether a target, decoded and normalised as a lenient origin might,
    names something under /admin/."""
    path = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "", target).split("?", 1)[0]
    path = unquote_to_bytes(path).decode("latin-1")
    path = re.sub("/+", "/", path)
    if not path.startswith("/"):
        return False
    path = remove_dot_segments(path)
    return path == "/admin" or path.startswith("/admin/")


def match_status(pattern, answer):
    if len(pattern) != len(answer):
        return False
    return all(p == a or (p == "x" and a.isdigit()) for p, a in zip(pattern, answer))


def reach_ok(reach, es):
    if reach == "any":
        return True
    if reach == "no":
        return not es
    if reach == "cut":
        return not any(e["done"] for e in es)
    if reach == "yes":
        return any(e["done"] for e in es)
    return reach(es)


def judge(probe, answer, es):
    """(correct, why not)."""
    for e in es:
        if SMUGGLED_PATH in e["target"]:
            return False, "smuggled request reached the origin"
        if admin_path(e["target"]):
            return False, "admin path reached the pool"
        if e["bad"]:
            return False, "origin got broken framing: " + e["bad"]
    for a in probe.want:
        if match_status(a.status, answer) and reach_ok(a.reach, es):
            return True, ""
    return False, "not one of: " + probe.expected()


class OriginLog:
    """Reads what the relay logged since a mark."""

    def __init__(self, path):
        self.path = path

    def mark(self):
        return os.path.getsize(self.path)

    def since(self, mark):
        with open(self.path, "rb") as f:
            f.seek(mark)
            data = f.read()
        reqs, order = {}, []
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("deny"):
                continue  # the deny origin is not the pool
            if "line" in rec:
                rec.update(done=False, bad="", body=0)
                reqs[rec["req"]] = rec
                order.append(rec)
            elif "done" in rec and rec["done"] in reqs:
                reqs[rec["done"]]["done"] = True
                reqs[rec["done"]]["body"] = rec["body"]
            elif "bad" in rec:
                if rec.get("req") in reqs:
                    reqs[rec["req"]]["bad"] = rec["bad"]
                else:  # broken framing before any request line: a pseudo-request
                    order.append({"target": "", "method": "", "headers": [], "done": False,
                                  "bad": rec["bad"], "fold": False, "nul": False, "body": 0})
        return order


def show_reached(es):
    """What reached the origins, short: targets, ~ for a request whose body
    never ended, ! for framing the origin could not parse."""
    out = []
    for e in es:
        t = e["target"] if e["method"] in ("GET", "POST") else (e["method"] + " " + e["target"])
        out.append(t + ("!" if e["bad"] else "" if e["done"] else "~"))
    return ",".join(out)


def cut(s, n=CELL_MAX):
    s = s.replace("\r", "\\r").replace("\n", "\\n").replace("\0", "\\0").replace("\t", "\\t")
    return s if len(s) <= n else s[: n - 1] + "…"


def run_probe(probe, port, timeout):
    if probe.h2:
        return exchange_h2(port, probe.h2[0], probe.h2[1], timeout)
    return exchange_h1(port, probe.steps, timeout)


def cmd_run(args):
    proxies = [p.split("=", 1) for p in args.proxy]
    selected = [p for p in probes() if not args.only or re.search(args.only, p.cls + " " + p.name)]
    if not selected:
        sys.exit("probes.py: no probe matches --only %r" % args.only)
    log = OriginLog(args.log)
    results = {}  # (probe index, proxy) → (answer, reached, ok, why, detail)
    for name, port in proxies:
        print("== probing %s on :%s (%d probes)" % (name, port, len(selected)), file=sys.stderr, flush=True)
        for i, probe in enumerate(selected):
            mark = log.mark()
            answer, detail = run_probe(probe, int(port), args.timeout)
            time.sleep(SETTLE)
            es = log.since(mark)
            ok, why = judge(probe, answer, es)
            results[i, name] = (answer, show_reached(es), ok, why, detail)
    names = [n for n, _ in proxies]
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "probe", "proxy", "answer", "reached", "correct", "why", "expected", "detail"])
            for i, probe in enumerate(selected):
                for n in names:
                    a, reached, ok, why, detail = results[i, n]
                    w.writerow([probe.cls, probe.name, n, a, reached, int(ok), why, probe.expected(), detail])
    rows = []
    for i, probe in enumerate(selected):
        row = [probe.cls, probe.name]
        for n in names:
            a, reached, ok, _, _ = results[i, n]
            row += [a + (" >" + reached if reached else ""), "ok" if ok else "WRONG"]
        row.append(probe.expected())
        rows.append(row)
    header = ["class", "probe"]
    for n in names:
        header += [n, ""]
    header.append("acceptable")
    totals = {n: sum(results[i, n][2] for i in range(len(selected))) for n in names}
    summary = "correct: " + ", ".join("%s %d/%d" % (n, totals[n], len(selected)) for n in names)
    print_table(header, rows, args.format)
    print()
    # Correct answers per class and proxy: the short form of the table.
    classes = list(dict.fromkeys(p.cls for p in selected))
    by_class = []
    for cls in classes:
        idx = [i for i, p in enumerate(selected) if p.cls == cls]
        by_class.append([cls] + ["%d/%d" % (sum(results[i, n][2] for i in idx), len(idx)) for n in names])
    print_table(["class"] + names, by_class, args.format)
    print()
    print(summary)
    print("answer: status line(s) of the response(s), '+' between pipelined ones, or close/reset/timeout;"
          " '>' what reached an origin (~ body never ended, ! framing the origin could not parse);"
          " h2:… an HTTP/2 answer, rst(N) RST_STREAM with error code N")


def print_table(header, rows, fmt):
    if fmt == "markdown":
        def esc(x):
            return cut(x, 60).replace("|", "\\|")
        print("| " + " | ".join(esc(h) for h in header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(esc(c) for c in r) + " |")
        return
    cells = [[cut(c) for c in r] for r in [header] + rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def cmd_list(args):
    for p in probes():
        if args.only and not re.search(args.only, p.cls + " " + p.name):
            continue
        print("%-12s %-36s %-28s %s" % (p.cls, cut(p.name, 36), p.expected(), p.why))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay", help="the recording origin")
    r.add_argument("--pair", action="append", required=True, help="LISTEN_PORT:TARGET_PORT")
    r.add_argument("--deny", type=int, help="also a deny origin (403 to everything) on this port")
    r.add_argument("--log", required=True)
    r.set_defaults(func=cmd_relay)
    x = sub.add_parser("run", help="probe the proxies and print the table")
    x.add_argument("--proxy", action="append", required=True, help="NAME=PORT, in table order")
    x.add_argument("--log", required=True, help="the relay's log")
    x.add_argument("--csv")
    x.add_argument("--only", help="regex on 'class probe'")
    x.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    x.add_argument("--format", choices=["text", "markdown"], default="text")
    x.set_defaults(func=cmd_run)
    l = sub.add_parser("list", help="the probes and their acceptable answers")
    l.add_argument("--only")
    l.set_defaults(func=cmd_list)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
