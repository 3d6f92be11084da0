#!/usr/bin/env python3
"""Turns a bench/c1m.sh results directory into the figures of the C1M run (summary.md) and a plot
of connections and memory over time (c1m.svg). A MODE=channels run adds the fan-out figures:
deliveries, lost and duplicated events, each broadcast's time to the last subscriber, and the
server's (and wsload's) CPU while publishing. Standard library only.

    python3 bench/c1m_report.py bench/c1m-out
"""

import csv
import json
import re
import sys
from pathlib import Path


def kv(path):
    """key=value pairs of a one-line file."""
    text = path.read_text() if path.exists() else ""
    return dict(p.split("=", 1) for p in text.split() if "=" in p)


def series(text, name):
    """Sum over processes of one series (labels other than `process` must match `name`'s)."""
    want_name, _, want_labels = name.partition("{")
    want = set(filter(None, want_labels.rstrip("}").split(",")))
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(want_name):
            continue
        key, _, value = line.rpartition(" ")
        n, _, labels = key.partition("{")
        if n != want_name:
            continue
        have = {l for l in labels.rstrip("}").split(",") if l and not l.startswith("process=")}
        if have == want:
            total += float(value)
    return total


def series_any(text, name):
    """Sum of every line of one series, whatever its labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key.partition("{")[0] == name:
            total += float(value)
    return total


def median(values):
    v = sorted(values)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def channel_lines(out, wl, start, end, hold):
    """The fan-out figures of a MODE=channels run, from wsload's report and the server's
    metrics around the publishing window."""
    c = lambda k: wl.get(k) or 0
    subscribed = c("connected")
    hold_s = int(hold.get("hold_seconds", 0))
    tck = int(hold.get("clk_tck", 100))
    cpu_s = int(hold.get("cpu_ticks", 0)) / tck
    ccpu_s = int(hold.get("client_cpu_ticks", 0)) / tck
    srv_deliveries = series_any(end, "holdfast_channel_deliveries_total") - series_any(start, "holdfast_channel_deliveries_total")
    slow = series_any(end, "holdfast_channel_slow_subscribers_total")
    bus_errors = series_any(end, "holdfast_channel_bus_errors_total")
    each = wl.get("broadcasts") or []
    complete = [b["to_last_us"] / 1e6 for b in each if b["deliveries"] >= subscribed and b["to_last_us"] > 0]
    short = [b for b in each if b["deliveries"] < subscribed]
    total = c("deliveries") + c("broadcast_deliveries")
    expected = c("expected_deliveries") + c("broadcast_expected_deliveries")
    lu, dl, bd = wl.get("last_subscriber_us") or {}, wl.get("delivery_us") or {}, wl.get("broadcast_delivery_us") or {}

    def s(us):
        if us is None:
            return "n/a"
        return f"{us / 1e3:.1f} ms" if us < 1e6 else f"{us / 1e6:.2f} s"

    lines = [
        f"- Subscribers: **{subscribed:,}** subscribed (each to 2 channels), {c('failed'):,} failed, {c('lost'):,} lost "
        f"(connections the server ended); channels: {wl.get('channels')} + `{wl.get('shared_channel')}`",
        f"- Published: **{c('events_published'):,}** of {c('events_planned'):,} small events "
        f"({wl.get('publish_per_sec', 0):,.0f}/s over {wl.get('publish_seconds', 0):.0f} s) and **{c('broadcasts_published')}** "
        f"of {c('broadcasts_planned')} broadcasts (one every {wl.get('broadcast_every_s', 0):g} s); "
        f"publish errors {c('publish_errors')}; API round trip p50 {s((wl.get('publish_us') or {}).get('p50'))}, "
        f"max {s((wl.get('publish_us') or {}).get('max'))}",
        f"- Deliveries: **{total:,}** of {expected:,} expected (small events {c('deliveries'):,} of {c('expected_deliveries'):,}, "
        f"broadcasts {c('broadcast_deliveries'):,} of {c('broadcast_expected_deliveries'):,}); "
        f"**lost {c('events_lost'):,} + {c('broadcasts_lost'):,}** (small + broadcast), duplicated **{c('duplicated'):,}**, "
        f"out of order {c('out_of_order'):,}, misrouted {c('misrouted'):,}; "
        f"server's count of deliveries queued while publishing {srv_deliveries:,.0f}; slow subscribers closed (4201) {slow:,.0f}; "
        f"bus errors {bus_errors:,.0f}",
        f"- **Broadcast to all {subscribed:,}** (publish to the last subscriber's receipt), per broadcast: "
        + (", ".join(f"{b['to_last_us'] / 1e6:.2f} s" + ("" if b["deliveries"] >= subscribed else f" ({b['deliveries']:,} delivered)") for b in each) or "none")
        + f"; p50 **{'n/a' if not complete else f'{median(complete):.2f} s'}**, max **{'n/a' if not complete else f'{max(complete):.2f} s'}**"
        + (f"; {len(short)} broadcast(s) did not reach everyone" if short else "")
        + f"; a broadcast delivery's latency p50 {s(bd.get('p50'))}, p99 {s(bd.get('p99'))}",
        f"- Small events: delivery latency p50 {s(dl.get('p50'))}, p99 {s(dl.get('p99'))}, max {s(dl.get('max'))}; "
        f"to the last of a channel's subscribers p50 {s(lu.get('p50'))}, p99 {s(lu.get('p99'))}, max {s(lu.get('max'))}; "
        f"deliveries/s (both kinds, first publish to last delivery) {wl.get('deliveries_per_sec', 0):,.0f}",
        f"- CPU while publishing ({hold_s} s): server **{cpu_s:.1f} s = {100 * cpu_s / max(hold_s, 1):.0f}% of one core** "
        f"({1e6 * cpu_s / max(srv_deliveries, 1):.2f} µs per delivery queued, pings included); "
        f"wsload (publisher + {wl.get('shards')} subscriber shards) {ccpu_s:.1f} s = {100 * ccpu_s / max(hold_s, 1):.0f}% of one core; "
        f"the host has {out_cores()} cores",
    ]
    return lines


def out_cores():
    try:
        import os
        return os.cpu_count()
    except Exception:
        return "?"


def rtt_quantiles(start, end, qs):
    """Quantiles of the heartbeat round trip between two scrapes, as the upper bound (ms) of the
    bucket each falls in: the server's clock counts whole milliseconds, so interpolating inside
    a bucket would invent precision."""
    bounds = []
    for m in re.finditer(r'holdfast_ws_ping_rtt_seconds_bucket\{(?:process="\d+",)?le="([^"]+)"\}', end):
        if m.group(1) not in bounds:
            bounds.append(m.group(1))
    cum = []
    for b in bounds:
        n = f'holdfast_ws_ping_rtt_seconds_bucket{{le="{b}"}}'
        cum.append((b, series(end, n) - series(start, n)))
    total = cum[-1][1] if cum else 0
    out = {}
    for q in qs:
        if total == 0:
            out[q] = None
            continue
        rank = q * total
        for b, c in cum:
            if c >= rank:
                out[q] = float("inf") if b == "+Inf" else float(b) * 1000
                break
    return out, total, [(b, c) for b, c in cum]


def svg_plot(rows, path, conns):
    """Two stacked panels: connections open; memory (server RSS, kernel slab, TCP buffers)."""
    w, h, pad = 900, 560, 60
    t = [int(r["t"]) for r in rows]
    tmax = max(t) or 1
    panels = [
        ("connections open", [("connections", "#1f77b4", [int(r["connections"]) for r in rows])], max(conns, 1)),
        (
            "memory (MiB)",
            [
                ("server RSS (all processes)", "#d62728", [int(r["server_rss_kib"]) / 1024 for r in rows]),
                ("kernel Slab", "#2ca02c", [int(r["slab_kib"]) / 1024 for r in rows]),
                ("TCP buffer pages", "#9467bd", [int(r["sock_mem_pages"]) * 4 / 1024 for r in rows]),
                ("wsload RSS", "#7f7f7f", [int(r["client_rss_kib"]) / 1024 for r in rows]),
            ],
            None,
        ),
    ]
    ph = (h - 3 * pad) / 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    for i, (title, lines, ymax) in enumerate(panels):
        top = pad + i * (ph + pad)
        ymax = ymax or max(max(v) for _, _, v in lines) * 1.1 or 1
        out.append(f'<text x="{pad}" y="{top - 10}" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{pad}" y="{top}" width="{w - 2 * pad}" height="{ph}" fill="none" stroke="#999"/>')
        for k in range(5):
            y = top + ph - ph * k / 4
            out.append(f'<text x="{pad - 5}" y="{y + 4}" text-anchor="end">{ymax * k / 4:,.0f}</text>')
            out.append(f'<line x1="{pad}" x2="{w - pad}" y1="{y}" y2="{y}" stroke="#eee"/>')
        for k in range(6):
            x = pad + (w - 2 * pad) * k / 5
            out.append(f'<text x="{x}" y="{top + ph + 15}" text-anchor="middle">{tmax * k / 5:.0f}s</text>')
        for j, (label, color, values) in enumerate(lines):
            pts = " ".join(
                f"{pad + (w - 2 * pad) * ti / tmax:.1f},{top + ph - ph * min(v, ymax) / ymax:.1f}" for ti, v in zip(t, values)
            )
            out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
            out.append(f'<text x="{pad + 10 + 220 * j}" y="{top + 15}" fill="{color}">{label}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/c1m-out")
    rows = list(csv.DictReader((out / "samples.csv").open()))
    rows = [r for r in rows if r.get("connections") not in (None, "")]
    setup = (out / "setup.txt").read_text().splitlines()
    run = next(l for l in setup if l.startswith("Run:"))
    netns = [l for l in setup if l.startswith("Network namespace:")]
    conns = int(re.search(r"CONNS=(\d+)", run).group(1))
    procs = int(re.search(r"server.processes=(\d+)", run).group(1))
    ramp, hold, drain = kv(out / "ramp.txt"), kv(out / "hold.txt"), kv(out / "drain.txt")
    start = (out / "metrics-held-start.txt").read_text()
    end = (out / "metrics-held-end.txt").read_text()

    base = rows[0]
    held = [r for r in rows if int(r["connections"]) >= conns * 0.999]
    peak = max(held or rows, key=lambda r: int(r["server_rss_kib"]))
    mid = held[len(held) // 2] if held else peak
    connected = int(ramp.get("connected", 0))
    ramp_s = max(int(ramp.get("seconds", 1)), 1)
    rss_total = int(peak["server_rss_kib"])
    rss_per = (int(mid["server_rss_kib"]) - int(base["server_rss_kib"])) / max(connected, 1)
    slab_per = (int(mid["slab_kib"]) - int(base["slab_kib"])) / max(connected, 1)
    sock_per = (int(mid["sock_mem_pages"]) - int(base["sock_mem_pages"])) * 4 / max(connected, 1)
    hold_s = int(hold.get("hold_seconds", 0))
    cpu_s = int(hold.get("cpu_ticks", 0)) / int(hold.get("clk_tck", 100))
    pings = series(end, "holdfast_ws_pings_sent_total") - series(start, "holdfast_ws_pings_sent_total")
    pongs = series(end, "holdfast_ws_pongs_received_total") - series(start, "holdfast_ws_pongs_received_total")
    # WebSocket connections that ended during the hold (the sampler's own scrapes are HTTP).
    closed = series(end, "holdfast_ws_closed_total") - series(start, "holdfast_ws_closed_total")
    open_end = series(end, "holdfast_ws_connections_open")
    q, timed, _ = rtt_quantiles(start, end, [0.5, 0.99, 0.999])
    wl_line = (out / "wsload-at-hold-end.txt").read_text().strip() if (out / "wsload-at-hold-end.txt").exists() else ""
    channels = [l for l in setup if l.startswith("Channels:")]
    wl = {}
    wsload = out / "wsload.json"
    if wsload.exists() and wsload.read_text().strip():
        try:
            wl = json.loads(wsload.read_text().strip().splitlines()[-1])
        except ValueError:
            wl = {}
    wl_lost = re.search(r"lost (\d+)", wl_line)
    wl_failed = re.search(r"failed (\d+)", wl_line)

    ramp_limit = re.search(r"RAMP=(\d+)", run).group(1)

    def ms(v):
        return "n/a" if v is None else ("> 30 s" if v == float("inf") else f"< {v:g} ms")

    lines = [
        f"- {setup[0]}",
        f"- {run}",
        *[f"- {l}" for l in netns],
        *[f"- {l}" for l in channels],
        f"- Connected: **{connected:,}** of {conns:,} in {ramp_s} s: **{connected / ramp_s:,.0f} connections/s** "
        f"(wsload's ramp limit {ramp_limit}/s)",
        f"- Held {hold_s} s: connections open at the end **{open_end:,.0f}**; WebSocket connections ended during the hold "
        f"**{closed:,.0f}**; wsload at the end of the hold: `{wl_line}`",
        f"- Server user memory (RSS of the supervisor and {procs} processes) at full load: "
        f"**{rss_total / 1024:,.0f} MiB**; per connection (less the idle baseline) **{rss_per * 1024:,.0f} bytes**",
        f"- Kernel memory per connection pair (both ends on this host): Slab **{slab_per:.2f} KiB** "
        f"+ TCP buffer pages **{sock_per:.2f} KiB**",
        f"- Heartbeats during the hold: {pings:,.0f} pings sent, {pongs:,.0f} pongs; server CPU {cpu_s:.1f} s over "
        f"{hold_s} s = **{100 * cpu_s / max(hold_s, 1):.1f}% of one core**, "
        f"**{1e6 * cpu_s / max(pings, 1):.2f} µs per ping/pong**",
        f"- Ping round trip (server ping to pong, {timed:,.0f} timed; upper bounds of histogram buckets): "
        f"p50 **{ms(q[0.5])}**, p99 **{ms(q[0.99])}**, p99.9 **{ms(q[0.999])}**",
    ]
    if channels:
        # The server's CPU goes mostly to the fan-out here: it is in the channel lines.
        lines[lines.index(next(l for l in lines if l.startswith("- Heartbeats")))] = (
            f"- Heartbeats while publishing: {pings:,.0f} pings sent, {pongs:,.0f} pongs"
        )
        lines[lines.index(next(l for l in lines if l.startswith("- Held")))] = (
            f"- Published for {hold_s} s: connections open at the end **{open_end:,.0f}**; WebSocket connections ended "
            f"while publishing **{closed:,.0f}**"
        )
        lines += channel_lines(out, wl, start, end, hold)
        lines.append(f"- Server stopped after wsload closed its subscribers (no drain timed): exit code {drain.get('exit', '?')}")
    else:
        lines.append(
            f"- Drain: SIGTERM with {open_end:,.0f} open to supervisor exit: **{float(drain.get('seconds', 'nan')):.1f} s**, "
            f"exit code {drain.get('exit', '?')}"
        )
    if not channels and (wl_lost is None or wl_failed is None):
        lines.append("- (wsload's progress line was not found; lost/failed from the client side unknown)")
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    svg_plot(rows, out / "c1m.svg", conns)
    print(summary)
    if wl:
        print("wsload:", json.dumps({k: wl.get(k) for k in ("connections", "connected", "failed", "lost", "connect_us")}))


if __name__ == "__main__":
    main()
