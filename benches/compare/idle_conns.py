#!/usr/bin/env python3
"""Holds N idle client connections open against a proxy, for run.sh's idle phase.

    idle_conns.py PORT N [PATH]            keep-alive: one GET PATH per connection, then idle
    idle_conns.py PORT N PATH --upgrade    WebSocket: one upgrade per connection, then an idle tunnel
    idle_conns.py --upgrade-origin PORT    an origin that answers every request with 101 and holds

Each client connection makes one request and reads its whole response, so that
the proxy has gone through a request (and, for --upgrade, set up a tunnel to its
origin) before the connection goes quiet: that is the state an idle keep-alive
connection or an idle WebSocket is in. Then the script prints "ready N" on
stdout and holds every socket until its stdin closes; run.sh reads the proxy's
RSS in between. Any failed connection or non-2xx/101 answer fails the run.
"""

import asyncio
import sys

# Connections opened at once: a burst larger than the listen backlog would see
# SYNs dropped and retried a second later, which only slows the setup down.
CONCURRENT_OPENS = 256


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, length


async def open_one(port, path, upgrade, gate):
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if upgrade:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
        else:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        writer.write(request.encode())
        status, length = await read_head(reader)
        if upgrade and status != 101:
            raise RuntimeError(f"upgrade answered {status}")
        if not upgrade:
            if not 200 <= status < 300:
                raise RuntimeError(f"GET {path} answered {status}")
            await reader.readexactly(length)
        return reader, writer


async def clients(port, n, path, upgrade):
    gate = asyncio.Semaphore(CONCURRENT_OPENS)
    held = await asyncio.gather(*(open_one(port, path, upgrade, gate) for _ in range(n)))
    print(f"ready {len(held)}", flush=True)
    # Hold until run.sh closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, writer in held:
        writer.close()


async def upgrade_origin(port):
    held = []

    async def serve(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        await writer.drain()
        held.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main():
    args = sys.argv[1:]
    if args[:1] == ["--upgrade-origin"]:
        asyncio.run(upgrade_origin(int(args[1])))
        return
    upgrade = "--upgrade" in args
    args = [a for a in args if a != "--upgrade"]
    port, n = int(args[0]), int(args[1])
    path = args[2] if len(args) > 2 else "/ping"
    asyncio.run(clients(port, n, path, upgrade))


if __name__ == "__main__":
    main()
