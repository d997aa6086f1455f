#!/usr/bin/env python3
"""Turns a bench/compare.sh output directory into summary.md and PNG plots.

Usage: bench/summarize.py DIR

For every cell (server, size, concurrency, mode) over its runs: the median
messages/s with min-max, the ratio to smtp-sink's median in the same cell, the
server's CPU time per accepted message (µs), and the median p99 end-of-DATA
latency. Plots (gnuplot): throughput vs concurrency (1 KB, many per connection)
and vs message size (100 sessions, many per connection), one line per server.
"""
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SERVERS = ["smtpd-sqlite", "smtpd-mysql", "smtp-sink", "aiosmtpd", "haraka"]


def load(out):
    cells = defaultdict(list)
    for line in (out / "grid.jsonl").read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        b = r.get("bench") or {}
        msgs = b.get("messages", 0)
        cells[(r["server"], r["size"], r["conns"], r["mode"])].append({
            "rate": b.get("messages_per_s", 0.0),
            "cpu_us": (r["server_cpu_s"] * 1e6 / msgs) if msgs else None,
            "p99": (b.get("eod_latency_ms") or {}).get("p99"),
            "errors": b.get("connection_errors", 0),
            "non250": sum(n for c, n in (b.get("replies") or {}).items() if not c.startswith("2")),
        })
    return cells


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def size_name(size):
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


def main():
    out = Path(sys.argv[1])
    cells = load(out)
    sizes = sorted({k[1] for k in cells})
    conns = sorted({k[2] for k in cells})
    modes = [m for m in ("many", "one") if any(k[3] == m for k in cells)]
    servers = [s for s in SERVERS if any(k[0] == s for k in cells)]
    servers += sorted({k[0] for k in cells} - set(servers))
    lines = ["# Comparison", ""]
    meta = out / "meta.txt"
    if meta.exists():
        lines += ["```", meta.read_text().strip(), "```", ""]
    lines += [
        "Each cell: median messages/s of the runs (min–max), × = ratio to smtp-sink's median in",
        "the same cell, CPU = server CPU time per accepted message (µs), p99 = median p99",
        "end-of-DATA → reply latency (ms). many = messages reuse the connection; one = a",
        "new connection per message.",
        "",
    ]
    for mode in modes:
        for size in sizes:
            lines.append(f"## {size_name(size)}, {'many messages per connection' if mode == 'many' else 'one message per connection'}")
            lines.append("")
            lines.append("| server | " + " | ".join(f"{c} sessions" for c in conns) + " |")
            lines.append("| --- |" + " --- |" * len(conns))
            for server in servers:
                row = [server]
                for c in conns:
                    runs = cells.get((server, size, c, mode), [])
                    if not runs:
                        row.append("–")
                        continue
                    rates = [r["rate"] for r in runs]
                    m = med(rates)
                    sink = med([r["rate"] for r in cells.get(("smtp-sink", size, c, mode), [])])
                    ratio = f" ×{m / sink:.2f}" if sink else ""
                    cpu = med([r["cpu_us"] for r in runs])
                    p99 = med([r["p99"] for r in runs])
                    errs = sum(r["errors"] + r["non250"] for r in runs)
                    note = f" ⚠{errs} err" if errs else ""
                    row.append(f"{fmt(m)} ({fmt(min(rates))}–{fmt(max(rates))}){ratio}<br>CPU {fmt(cpu)} µs, p99 {fmt(p99, 2)} ms{note}")
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    lines += summarize_paced(out / "paced.jsonl")
    loadgen = out / "loadgen.txt"
    if loadgen.exists():
        lines += ["## The load generator: smtp-bench vs smtp-source, against smtp-sink", "", "```", loadgen.read_text().strip(), "```", ""]
        lines += summarize_loadgen(loadgen.read_text())
    idle = out / "idle.txt"
    if idle.exists():
        lines += ["## smtpd memory with idle connections (RSS, KiB)", "", "```", idle.read_text().strip(), "```", ""]
        with10k = out / "with_10k_idle.json"
        if with10k.exists() and with10k.read_text().strip():
            b = json.loads(with10k.read_text())
            lines += [f"Throughput with 10,000 idle connections open (100 active sessions, 1 KB): {fmt(b.get('messages_per_s'))} msg/s, p99 end-of-DATA {fmt((b.get('eod_latency_ms') or {}).get('p99'), 2)} ms.", ""]
    plots = plot(out, cells, servers, sizes, conns)
    for p in plots:
        lines += [f"![{p.stem}]({p.name})", ""]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def summarize_paced(path):
    """The target: p99 end-of-DATA → reply under 10 ms at half the peak rate."""
    if not path.exists() or not path.read_text().strip():
        return []
    lines = [
        "## Latency at half the peak rate (smtpd, many messages per connection)",
        "",
        "Paced with `--rate` at half the cell's median msgs/s from the grid above.",
        "",
        "| server | size | sessions | rate (msgs/s) | achieved | p50 ms | p99 ms | p99.9 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        b = r.get("bench") or {}
        lat = b.get("eod_latency_ms") or {}
        achieved = b.get("messages_per_s")
        lines.append(
            f"| {r['server']} | {size_name(r['size'])} | {r['conns']} | {fmt(r['rate'])} | {fmt(achieved)} "
            f"| {fmt(lat.get('p50'), 2)} | {fmt(lat.get('p99'), 2)} | {fmt(lat.get('p99.9'), 2)} |"
        )
    return lines + [""]


def summarize_loadgen(text):
    rows = defaultdict(list)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 7:
            continue
        tool, size, n = parts[0], parts[1].split("=")[1], int(parts[2].split("=")[1])
        wall, user, sys_ = (float(x) for x in (parts[4].split("=")[1], parts[5], parts[6]))
        sink = float(parts[7].split("=")[1]) if len(parts) > 7 else 0.0
        rows[(tool, size)].append((n / wall, (user + sys_) * 1e6 / n, sink * 1e6 / n))
    out = ["| generator | size | msgs/s (median) | generator CPU µs/msg | smtp-sink CPU µs/msg |", "| --- | --- | --- | --- | --- |"]
    for (tool, size), v in sorted(rows.items()):
        out.append(f"| {tool} | {size} | {fmt(med([x[0] for x in v]))} | {fmt(med([x[1] for x in v]), 1)} | {fmt(med([x[2] for x in v]), 1)} |")
    return out + [""]


def plot(out, cells, servers, sizes, conns):
    made = []
    def series(key_of, xs):
        data = {}
        for s in servers:
            pts = []
            for x in xs:
                runs = cells.get(key_of(s, x), [])
                if runs:
                    pts.append((x, med([r["rate"] for r in runs])))
            data[s] = pts
        return data
    jobs = []
    if 1024 in sizes and len(conns) > 1:
        jobs.append(("throughput_vs_concurrency", "concurrent sessions (1 KB, many per connection)", True,
                     series(lambda s, c: (s, 1024, c, "many"), conns)))
    c = 100 if 100 in conns else (conns[-1] if conns else None)
    if c is not None and len(sizes) > 1:
        jobs.append(("throughput_vs_size", f"message size, bytes ({c} sessions, many per connection)", True,
                     series(lambda s, size: (s, size, c, "many"), sizes)))
    for name, xlabel, logx, data in jobs:
        script = [
            "set terminal pngcairo size 900,540 noenhanced" if gnuplot_has("pngcairo") else "set terminal png size 900,540",
            f"set output '{out / (name + '.png')}'",
            f"set xlabel '{xlabel}'", "set ylabel 'messages/s (median)'", "set logscale y", "set grid",
            "set key outside right",
        ]
        if logx:
            script.append("set logscale x")
        plots = []
        for s, pts in data.items():
            if not pts:
                continue
            f = out / f"{name}.{s}.dat"
            f.write_text("".join(f"{x} {y}\n" for x, y in pts))
            plots.append(f"'{f}' using 1:2 with linespoints title '{s}'")
        if not plots:
            continue
        script.append("plot " + ", ".join(plots))
        try:
            subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True, capture_output=True)
            made.append(out / (name + ".png"))
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"gnuplot failed for {name}: {e}", file=sys.stderr)
    return made


def gnuplot_has(terminal):
    try:
        r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
        return terminal in (r.stdout + r.stderr)
    except OSError:
        return False


if __name__ == "__main__":
    main()
