#!/usr/bin/env python3
"""A small authoritative DNS server for discovery.sh: A records over UDP and
TCP on loopback, with as many addresses per name as asked, optionally moving
one address a second so that every re-resolution finds a different set.

  discovery_dns.py --listen 127.0.0.1:15353 [--log FILE]
                   NAME=COUNT@FIRST[,ttl=SECONDS][,rotate] ...

Each NAME=COUNT@FIRST answers an A query for NAME with COUNT addresses, the
consecutive IPv4 addresses from FIRST (`pool.bench.test=200@127.2.0.1`: from
127.2.0.1 to 127.2.0.200), with a TTL of 1 s unless `ttl=` says otherwise.
COUNT 0 makes the name exist with no A record (NOERROR, no data). With
`rotate`, the COUNT addresses are a window that moves one address each
wall-clock second over a ring of 2 × COUNT addresses from FIRST: the answer of
second s starts at FIRST + (s mod 2 × COUNT). A client that asks at most once
a second (the proxy clamps a TTL to at least its `min_ttl`) therefore finds
one address gone and one new on every answer after the first.

--log FILE appends one line per answer: the Unix time, `udp` or `tcp`, the
name, the query type, the number of records, and `truncated` when a UDP answer
was cut (discovery.sh reads it to know when the proxy has had its answers).

Every name answers AAAA and other types with NOERROR and no data (the proxy
asks A and AAAA); any other name is NXDOMAIN. A UDP answer larger than the
query allows (512 bytes, or the EDNS payload size it advertises) goes out
truncated (TC set, the question kept, no records), and the client asks again
over TCP, as real resolvers do: a 200-address answer is about 3.3 KB, a
2 000-address one about 32 KB (a TCP message holds at most 64 KiB, about
4 000 A records).

Needs dnslib (`pip install dnslib`) for the wire format; the sockets are the
standard library's. Runs until SIGTERM or SIGINT.
"""

import argparse
import ipaddress
import signal
import socketserver
import struct
import sys
import threading
import time

from dnslib import QTYPE, RCODE, RR, A, DNSRecord, DNSError

# A DNS message over UDP without EDNS: RFC 1035 §4.2.1.
UDP_DEFAULT_PAYLOAD = 512


class Zone:
    """The names this server answers, and how."""

    def __init__(self, specs):
        self.names = {}
        for spec in specs:
            self.names.update([parse_spec(spec)])

    def addresses(self, name):
        """(the addresses `name` has now, their TTL), or None when it does not
        exist."""
        entry = self.names.get(name)
        if entry is None:
            return None
        count, first, ttl, rotate = entry
        if not rotate or count == 0:
            return [str(ipaddress.IPv4Address(first + i)) for i in range(count)], ttl
        ring = 2 * count
        start = int(time.time()) % ring
        return [str(ipaddress.IPv4Address(first + (start + i) % ring)) for i in range(count)], ttl

    def answer(self, query):
        """The reply to a parsed query."""
        reply = query.reply()
        q = query.q
        found = self.addresses(str(q.qname).lower())
        if found is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif q.qtype == QTYPE.A:
            addrs, ttl = found
            for a in addrs:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(a), ttl=ttl))
        return reply


def parse_spec(spec):
    """NAME=COUNT@FIRST[,ttl=N][,rotate] → (NAME., (count, first, ttl, rotate))."""
    head, *opts = spec.split(",")
    try:
        name, rest = head.split("=", 1)
        count, first = rest.split("@", 1)
        count = int(count)
        first = int(ipaddress.IPv4Address(first))
        ttl, rotate = 1, False
        for o in opts:
            if o == "rotate":
                rotate = True
            elif o.startswith("ttl="):
                ttl = int(o[4:])
            else:
                raise ValueError(o)
    except ValueError:
        sys.exit(f"discovery_dns: bad name spec {spec!r} (expected NAME=COUNT@FIRST[,ttl=N][,rotate])")
    if count < 0 or ttl < 0:
        sys.exit(f"discovery_dns: negative count or TTL in {spec!r}")
    span = 2 * count if rotate else count
    if first + span - 1 > 0xFFFFFFFF:
        sys.exit(f"discovery_dns: {spec!r} runs past 255.255.255.255")
    return name.lower().rstrip(".") + ".", (count, first, ttl, rotate)


class Log:
    """One line per answer, or nothing without --log."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.lock = threading.Lock()

    def answer(self, proto, query, reply, cut):
        if self.file is None:
            return
        line = f"{time.time():.3f} {proto} {str(query.q.qname).lower()} {QTYPE[query.q.qtype]} {len(reply.rr)}"
        with self.lock:
            self.file.write(line + (" truncated\n" if cut else "\n"))
            self.file.flush()


def udp_limit(query):
    """The largest UDP answer `query` accepts: its EDNS payload size, else 512."""
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_DEFAULT_PAYLOAD, rr.rclass)
    return UDP_DEFAULT_PAYLOAD


def truncated(query):
    """An empty answer with TC set, the question kept (resolvers match it)."""
    reply = query.reply()
    reply.header.tc = 1
    return reply


def parse(data):
    try:
        return DNSRecord.parse(data)
    except DNSError as e:
        print(f"discovery_dns: unparsable query: {e}", file=sys.stderr)
        return None


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        query = parse(data)
        if query is None:
            return
        reply = self.server.zone.answer(query)
        wire = reply.pack()
        cut = len(wire) > udp_limit(query)
        if cut:
            wire = truncated(query).pack()
        sock.sendto(wire, self.client_address)
        self.server.log.answer("udp", query, reply, cut)


class TCPHandler(socketserver.BaseRequestHandler):
    """Length-prefixed messages (RFC 1035 §4.2.2), several per connection."""

    def handle(self):
        while True:
            head = self.read(2)
            if head is None:
                return
            data = self.read(struct.unpack("!H", head)[0])
            if data is None:
                return
            query = parse(data)
            if query is None:
                return
            reply = self.server.zone.answer(query)
            wire = reply.pack()
            self.request.sendall(struct.pack("!H", len(wire)) + wire)
            self.server.log.answer("tcp", query, reply, False)

    def read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


class UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True


class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="IP:PORT, for both UDP and TCP")
    p.add_argument("--log", help="append a line per answer to this file")
    p.add_argument("names", nargs="+", metavar="NAME=COUNT@FIRST[,ttl=N][,rotate]")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    zone = Zone(args.names)
    log = Log(args.log)
    servers = []
    for cls, handler in ((UDPServer, UDPHandler), (TCPServer, TCPHandler)):
        s = cls((host, int(port)), handler)
        s.zone = zone
        s.log = log
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
