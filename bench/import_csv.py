#!/usr/bin/env python3
"""Writes a CSV of N subscribers to stdout (bench/import.sh): email,name,city,plan.

Deterministic (the same N gives the same file), unique addresses, a few mixed-case
ones, so the import's work is the same run to run.
"""

import sys

CITIES = ["Oslo", "Bergen", "Rome", "Lisbon", "Tallinn", "Porto", "Lyon", "Graz"]
PLANS = ["free", "pro", "team"]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    out = sys.stdout
    out.write("email,name,city,plan\n")
    lines = []
    for i in range(n):
        user = f"User{i}" if i % 10 == 0 else f"user{i}"
        lines.append(
            f"{user}@example{i % 97}.test,Subscriber {i},{CITIES[i % len(CITIES)]},{PLANS[i % 3]}\n"
        )
        if len(lines) == 10_000:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))


if __name__ == "__main__":
    main()
