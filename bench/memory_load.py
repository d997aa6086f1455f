#!/usr/bin/env python3
"""Bounded memory load for bench/memory.sh (issue 15, item 11).

  memory_load.py send PORT N BYTES         N clients, one BYTES message each, at once
  memory_load.py hold PORT N BYTES SECS    N clients send their bodies, hold back the
                                           final dot for SECS, then send it
  memory_load.py probe PORT SECS           small messages one after another for SECS
                                           (5 s timeout each): how long others wait

Prints `key value` lines. Every socket has a timeout and every loop a bound.
"""
import collections, socket, sys, threading, time

LINE = b"x" * 998 + b"\r\n"


def reply(f):
    while True:
        line = f.readline()
        if not line:
            return b"EOF"
        if line[3:4] != b"-":
            return line


def transaction(port, rcpt, body, hold_secs=0.0, timeout=120):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    f = s.makefile("rb")
    reply(f)
    for c in [b"EHLO load.test", b"MAIL FROM:<load@example.org>", b"RCPT TO:<%s>" % rcpt, b"DATA"]:
        s.sendall(c + b"\r\n")
        reply(f)
    s.sendall(body)
    if hold_secs:
        time.sleep(hold_secs)
    s.sendall(b".\r\n")
    code = reply(f)[:3]
    s.close()
    return code


def many(port, n, size, hold_secs):
    body = b"Subject: load\r\n\r\n" + LINE * (size // len(LINE))
    codes, lock = [], threading.Lock()

    def one(i):
        try:
            code = transaction(port, b"r%d@example.com" % i, body, hold_secs)
        except OSError as e:
            code = type(e).__name__.encode()
        with lock:
            codes.append(code.decode())

    start = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    print("elapsed_s", round(time.time() - start, 2))
    print("replies", dict(collections.Counter(codes)))


def probe(port, secs):
    ok = failed = slow = 0
    worst = 0.0
    end = time.time() + secs
    while time.time() < end:
        t = time.time()
        try:
            code = transaction(port, b"probe@example.com", b"Subject: probe\r\n\r\nhi\r\n", timeout=5)
            ok, failed = (ok + 1, failed) if code == b"250" else (ok, failed + 1)
        except OSError:
            failed += 1
        d = time.time() - t
        worst = max(worst, d)
        slow += d > 1
    print("probes_ok", ok)
    print("probes_failed", failed)
    print("probes_over_1s", slow)
    print("probe_worst_s", round(worst, 2))


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "send":
        many(port, int(sys.argv[3]), int(sys.argv[4]), 0.0)
    elif mode == "hold":
        many(port, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "probe":
        probe(port, float(sys.argv[3]))
    else:
        sys.exit(__doc__)
