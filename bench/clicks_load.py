#!/usr/bin/env python3
"""A small HTTP/1.1 keep-alive load generator for bench/clicks.sh, used when oha
is not installed: N GETs of one URL over C connections (or a fixed RATE per
second for SECS seconds), each response read in full; prints requests/s and
latency percentiles (ms). Standard library only (asyncio)."""
import asyncio, sys, time
from urllib.parse import urlsplit


async def one_conn(host, port, path, jobs, lat, codes, pace):
    reader, writer = await asyncio.open_connection(host, port)
    req = f"GET {path} HTTP/1.1\r\nHost: t.bench.test\r\nUser-Agent: clicks_load\r\n\r\n".encode()
    while True:
        due = await jobs()
        if due is None:
            break
        if pace and due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        start = time.perf_counter() if not pace else max(due, 0)
        t0 = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length:
            await reader.readexactly(length)
        # Fixed rate: latency from the due time (coordinated omission counted).
        lat.append(time.perf_counter() - (due if pace else t0))
        codes[head.split(b" ")[1]] = codes.get(head.split(b" ")[1], 0) + 1
    writer.close()


async def main():
    url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0
    u = urlsplit(url)
    lat, codes = [], {}
    start = time.perf_counter()
    issued = 0

    async def jobs():
        nonlocal issued
        if issued >= n:
            return None
        issued += 1
        return start + issued / rate if rate else 0.0

    await asyncio.gather(*(one_conn(u.hostname, u.port, u.path, jobs, lat, codes, bool(rate)) for _ in range(c)))
    secs = time.perf_counter() - start
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000
    print(f"requests {len(lat)} in {secs:.2f}s: {len(lat) / secs:,.0f} req/s; status {dict((k.decode(), v) for k, v in codes.items())}")
    print(f"latency ms: p50 {pct(50):.3f}  p90 {pct(90):.3f}  p99 {pct(99):.3f}  p99.9 {pct(99.9):.3f}  max {lat[-1] * 1000:.3f}")


asyncio.run(main())
