#!/usr/bin/env python3
"""Resumed-to-full ratios for bench/tls.sh, paired rep by rep, and how busy each server was.

Reads the script's per-rep lines ("rep N SCENARIO SERVER: RATE CPU_US ...") on stdin and prints
two Markdown tables. Pairing by rep keeps a noisy minute from landing in only one side of a
ratio. The busy column (rate x CPU per unit, in cores) says whose ceiling a rate is: a server
near 1.00 (or near QUOTA, when tls.sh capped it) was the limit; one well below it waited for
the client, and then its capacity on one core is 1e6 / (µs CPU each), not the rate.
"""
import re
import statistics
import sys

PAIRS = [("full12", "resumed12"), ("hs_full12", "hs_resumed12"), ("hs_full13", "hs_resumed13")]


def main():
    runs = {}
    order = []
    for line in sys.stdin:
        m = re.match(r"rep (\d+) (\S+) (\S+): (\d+) ([\d.]+)", line)
        if not m:
            continue
        rep, scenario, server = int(m[1]), m[2], m[3]
        runs[(rep, scenario, server)] = (int(m[4]), float(m[5]))
        if scenario not in order:
            order.append(scenario)
    reps = sorted({k[0] for k in runs})
    servers = ["nginx", "holdfast"]

    def ratios(server, full, resumed):
        rate, cpu = [], []
        for rep in reps:
            f, r = runs.get((rep, full, server)), runs.get((rep, resumed, server))
            if f and r and f[0] > 0 and r[1] > 0:
                rate.append(r[0] / f[0])
                cpu.append(f[1] / r[1])
        return rate, cpu

    pairs = [p for p in PAIRS if p[0] in order and p[1] in order]
    if pairs:
        print("| resumed / full, paired by rep (median) | nginx /s | holdfast /s | nginx CPU | holdfast CPU |")
        print("|---|---:|---:|---:|---:|")
        for full, resumed in pairs:
            cells = []
            for kind in (0, 1):
                for server in servers:
                    values = ratios(server, full, resumed)[kind]
                    cells.append(f"{statistics.median(values):.2f}×" if values else "-")
            print(f"| {resumed} / {full} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
        print()
    print("| scenario | nginx busy (cores) | holdfast busy (cores) | holdfast on one core (1e6 / µs each) |")
    print("|---|---:|---:|---:|")
    for scenario in order:
        busy = {}
        for server in servers:
            values = [runs[(rep, scenario, server)] for rep in reps if (rep, scenario, server) in runs]
            busy[server] = statistics.median(r * c / 1e6 for r, c in values)
            if server == "holdfast":
                capacity = 1e6 / statistics.median(c for _, c in values)
        print(f"| {scenario} | {busy['nginx']:.2f} | {busy['holdfast']:.2f} | {capacity:.0f} |")


if __name__ == "__main__":
    main()
