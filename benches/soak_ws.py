#!/usr/bin/env python3
"""A tiny WebSocket echo server and load client for benches/soak.sh (RFC 6455,
standard library only: the soak needs no pip install).

    soak_ws.py server PORT
    soak_ws.py client HOST:PORT PATH CONNECTIONS SESSION_SECONDS LOG

The server answers the opening handshake and echoes every text or binary frame
(ping gets pong, close gets close). Each client connection runs sessions until
it is terminated: connect, handshake (101 with the right Sec-WebSocket-Accept),
one message every 100 ms for SESSION_SECONDS (each echo checked), then a clean
close. Every session appends one line to LOG: "EPOCH ok MESSAGES" or
"EPOCH fail REASON"; the script counts them per time slot.
"""

import base64
import hashlib
import os
import socket
import socketserver
import struct
import sys
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# How long a client waits for the handshake answer or an echo: far beyond a
# loopback round trip, so a timeout is a real stall.
IO_TIMEOUT = 10.0
MESSAGE_INTERVAL = 0.1


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError("connection closed")
        buf += part
    return buf


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        part = sock.recv(4096)
        if not part:
            raise EOFError("connection closed during the handshake")
        buf += part
        if len(buf) > 65536:
            raise ValueError("handshake head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    if rest:
        raise ValueError("bytes after the handshake before any frame")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def read_frame(sock):
    b0, b1 = read_exact(sock, 2)
    opcode = b0 & 0x0F
    masked = b1 & 0x80
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", read_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", read_exact(sock, 8))
    mask = read_exact(sock, 4) if masked else None
    payload = read_exact(sock, n)
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return opcode, payload


def frame(opcode, payload, masked):
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        try:
            _, headers = read_head(sock)
            key = headers.get(b"sec-websocket-key")
            if not key or headers.get(b"upgrade", b"").lower() != b"websocket":
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                return
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                b"connection: upgrade\r\nsec-websocket-accept: " + accept_key(key) + b"\r\n\r\n"
            )
            while True:
                opcode, payload = read_frame(sock)
                if opcode == 8:
                    sock.sendall(frame(8, payload[:2], masked=False))
                    return
                if opcode == 9:
                    sock.sendall(frame(10, payload, masked=False))
                elif opcode in (1, 2):
                    sock.sendall(frame(opcode, payload, masked=False))
        except (EOFError, OSError, ValueError):
            return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def session(host, port, path, seconds):
    """One connection: handshake, echoes for `seconds`, clean close. Returns the
    number of messages echoed; raises on any failure."""
    sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    try:
        key = base64.b64encode(os.urandom(16))
        sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, headers = read_head(sock)
        if b" 101 " not in status + b" ":
            raise ValueError(f"handshake answered {status!r}")
        if headers.get(b"sec-websocket-accept") != accept_key(key):
            raise ValueError("wrong Sec-WebSocket-Accept")
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = f"message {sent} {os.urandom(6).hex()}".encode()
            sock.sendall(frame(1, msg, masked=True))
            opcode, payload = read_frame(sock)
            if opcode != 1 or payload != msg:
                raise ValueError(f"echo mismatch: opcode {opcode}, {payload[:40]!r}")
            sent += 1
            time.sleep(MESSAGE_INTERVAL)
        sock.sendall(frame(8, struct.pack("!H", 1000), masked=True))
        opcode, _ = read_frame(sock)
        if opcode != 8:
            raise ValueError(f"close answered with opcode {opcode}")
        return sent
    finally:
        sock.close()


def client(target, path, connections, seconds, log_path):
    host, _, port = target.rpartition(":")
    port = int(port)
    lock = threading.Lock()
    log = open(log_path, "a", buffering=1)

    def record(line):
        with lock:
            log.write(f"{int(time.time())} {line}\n")

    def run():
        while True:
            try:
                n = session(host, port, path, seconds)
                record(f"ok {n}")
            except Exception as e:  # every failure is counted, none ends the loop
                record("fail " + repr(e).replace("\n", " ")[:200])
                time.sleep(0.5)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv):
    if len(argv) == 3 and argv[1] == "server":
        with Server(("127.0.0.1", int(argv[2])), Echo) as srv:
            srv.serve_forever()
    elif len(argv) == 7 and argv[1] == "client":
        client(argv[2], argv[3], int(argv[4]), float(argv[5]), argv[6])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
