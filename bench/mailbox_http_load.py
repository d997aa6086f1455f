#!/usr/bin/python3
"""Readers for bench/mailbox_http.sh: event-stream subscribers, a polling reader,
and arrival-to-event latency probes against `smtpd --http`.

Usage: mailbox_http_load.py HTTP_ADDR SMTP_ADDR STOP_FILE
         [--subscribers N] [--poll-rate R] [--address A] [--probe-address P]
         [--probe-interval S]

Opens N event streams (GET /api/v1/mailboxes/A/events, HTTP/1.0; with --hot K
only K of them on A, the others on addresses of their own) and polls
GET /api/v1/mailboxes/A/messages?limit=50 at R requests/s (new connection each),
and every S seconds sends one message to P over SMTP (smtplib) while a stream
on P measures the time from the 250 to its event. Prints "ready" once every
stream said `ready`; runs until STOP_FILE exists (or 300 s), then prints one
JSON object: events received per stream, resyncs, polls done/failed and their
latency, and the probe latencies (p50/p99, ms). Stdlib only, loopback only.
"""

import argparse
import asyncio
import json
import os
import smtplib
import statistics
import sys
import threading
import time

p = argparse.ArgumentParser()
p.add_argument("http")
p.add_argument("smtp")
p.add_argument("stop")
p.add_argument("--subscribers", type=int, default=100)
p.add_argument("--poll-rate", type=float, default=100.0)
p.add_argument("--address", default="user0@example.com")
p.add_argument("--hot", type=int, default=None,
               help="streams on --address (the rest watch quiet addresses); default all")
p.add_argument("--probe-address", default="probe@example.com")
p.add_argument("--probe-interval", type=float, default=0.05)
args = p.parse_args()
host, port = args.http.rsplit(":", 1)
MAX_SECONDS = 300

stats = {"events": [], "resyncs": 0, "polls": 0, "poll_errors": 0, "poll_ms": [], "probe_ms": []}
probe_sent = {}  # subject -> time of the 250
probe_seen = {}  # subject -> time of the event


async def stream(address, ready, on_event):
    r, w = await asyncio.open_connection(host, int(port))
    w.write(f"GET /api/v1/mailboxes/{address}/events HTTP/1.0\r\nHost: b\r\n\r\n".encode())
    await w.drain()
    status = await r.readline()
    assert b" 200 " in status, status
    while (await r.readline()).strip():
        pass
    name, data = "", ""
    while True:
        line = await r.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if not line:
            if name == "ready":
                ready.set()
            elif name:
                on_event(name, data)
            name, data = "", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


async def poller():
    interval = 1.0 / args.poll_rate
    nxt = time.monotonic()
    while True:
        nxt += interval
        t0 = time.monotonic()
        try:
            r, w = await asyncio.open_connection(host, int(port))
            w.write(f"GET /api/v1/mailboxes/{args.address}/messages?limit=50 HTTP/1.0\r\nHost: b\r\n\r\n".encode())
            await w.drain()
            body = await r.read()
            w.close()
            if b" 200 " not in body.split(b"\r\n", 1)[0]:
                stats["poll_errors"] += 1
            else:
                stats["polls"] += 1
                stats["poll_ms"].append((time.monotonic() - t0) * 1000)
        except OSError:
            stats["poll_errors"] += 1
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))


def prober(stop):
    shost, sport = args.smtp.rsplit(":", 1)
    s = smtplib.SMTP(shost, int(sport), timeout=30)
    n = 0
    while not stop.is_set():
        subject = f"probe{n}"
        n += 1
        msg = f"From: p@example.org\r\nTo: {args.probe_address}\r\nSubject: {subject}\r\n\r\nx\r\n"
        s.sendmail("p@example.org", [args.probe_address], msg)
        probe_sent[subject] = time.monotonic()
        stop.wait(args.probe_interval)
    s.quit()


async def main():
    counts = [0] * args.subscribers
    readies = []
    tasks = []
    for i in range(args.subscribers):
        ev = asyncio.Event()
        readies.append(ev)

        def on_event(name, data, i=i):
            if name == "message":
                counts[i] += 1
            elif name == "resync":
                stats["resyncs"] += 1
        hot = args.subscribers if args.hot is None else args.hot
        address = args.address if i < hot else f"quiet{i}@example.com"
        tasks.append(asyncio.create_task(stream(address, ev, on_event)))

    probe_ready = asyncio.Event()

    def on_probe(name, data):
        if name == "message":
            probe_seen.setdefault(json.loads(data)["subject"], time.monotonic())
    tasks.append(asyncio.create_task(stream(args.probe_address, probe_ready, on_probe)))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies + [probe_ready])), 30)
    if args.poll_rate > 0:
        tasks.append(asyncio.create_task(poller()))
    stop = threading.Event()
    t = threading.Thread(target=prober, args=(stop,), daemon=True)
    t.start()
    print("ready", flush=True)
    deadline = time.monotonic() + MAX_SECONDS
    while not os.path.exists(args.stop) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    t.join(10)
    await asyncio.sleep(0.5)  # the last probe's event
    stats["events"] = counts
    for subject, sent in probe_sent.items():
        seen = probe_seen.get(subject)
        if seen is not None:
            stats["probe_ms"].append(max(0.0, seen - sent) * 1000)
    stats["probes_sent"] = len(probe_sent)
    for t in tasks:
        t.cancel()


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round((len(v) - 1) * q)))], 2)


asyncio.run(main())
out = {
    "subscribers": args.subscribers,
    "events_min": min(stats["events"][: args.hot or None] or [0]),
    "events_max": max(stats["events"]) if stats["events"] else 0,
    "resyncs": stats["resyncs"],
    "polls": stats["polls"],
    "poll_errors": stats["poll_errors"],
    "poll_ms_p50": pct(stats["poll_ms"], 0.5),
    "poll_ms_p99": pct(stats["poll_ms"], 0.99),
    "probes_sent": stats["probes_sent"],
    "probes_seen": len(stats["probe_ms"]),
    "probe_ms_p50": pct(stats["probe_ms"], 0.5),
    "probe_ms_p99": pct(stats["probe_ms"], 0.99),
}
print(json.dumps(out), flush=True)
