#!/usr/bin/python3
"""Open N HTTP/1.1 keep-alive connections to a proxy, send one request on each, and keep them open and idle.

Used by bench/run.sh (the idle scenario) to measure a proxy's memory per idle client connection:

    idle_clients.py HOST PORT COUNT [--concurrency 200] [--path /] [--timeout 30]

Prints one line "ready ok=N failed=N open_s=S" on stdout once every connection got its full response (or failed),
then holds the connections until SIGTERM or SIGINT, and prints "closing still_open=N" before exiting: the number
of connections the proxy had not closed by then. Standard library only (Debian's /usr/bin/python3).
"""
import argparse
import asyncio
import signal
import sys
import time


async def one(host, port, path, timeout, sem, conns):
    async with sem:  # bounded connects, so the listen backlog (often 511) does not overflow
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status_line, _, rest = head.partition(b"\r\n")
            if b" 200 " not in status_line + b" ":
                writer.close()
                return False
            length = None
            chunked = False
            for line in rest.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if length is not None:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            elif chunked:
                while True:
                    size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)).split(b";")[0], 16)
                    await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                    if size == 0:
                        break
            else:  # no framing: the proxy closes to end the body, so the connection cannot stay idle
                writer.close()
                return False
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return False
        conns.append((reader, writer))
        return True


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--path", default="/")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)

    sem = asyncio.Semaphore(a.concurrency)
    conns = []
    t0 = time.monotonic()
    results = await asyncio.gather(*(one(a.host, a.port, a.path, a.timeout, sem, conns) for _ in range(a.count)))
    ok = sum(1 for r in results if r)
    print(f"ready ok={ok} failed={a.count - ok} open_s={time.monotonic() - t0:.1f}", flush=True)

    await stop.wait()
    # a connection the proxy closed has seen EOF (the protocol feeds it even with nobody reading)
    still_open = sum(1 for reader, _ in conns if not reader.at_eof())
    print(f"closing still_open={still_open}", flush=True)
    for _, writer in conns:
        writer.transport.abort()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
