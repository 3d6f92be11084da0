"""bench/fanout.sh's figures: turns one `wsload subscribe --json` report into a line of
runs.tsv (`line`), and runs.tsv into the Markdown of bench/results/fanout.md (or
fanout-sse.md, TRANSPORT=sse) (`table`):
medians over the reps per scenario and server, the ratios holdfast/nchan next to the
project's targets, then every run.

  python3 bench/fanout_report.py line SERVER SCENARIO KIND REP RATE SUBS JSON
  python3 bench/fanout_report.py table runs.tsv
"""

import json
import statistics
import sys

COLUMNS = [
    "server", "scenario", "kind", "rep", "rate", "connected", "deliveries_per_s", "lost",
    "duplicated", "out_of_order", "publish_errors", "clean", "last_p50_ms", "last_p99_ms",
    "last_max_ms", "delivery_p50_ms", "delivery_p99_ms", "cpu_us", "kernel_pct",
    "kib_per_sub", "deliveries", "expected", "published", "host_busy_pct",
]


def line(server, scenario, kind, rep, rate, subs, text, busy="0"):
    try:
        j = json.loads(text)
    except ValueError:
        j = None
    if not j:
        v = dict.fromkeys(COLUMNS, 0)
        v.update(server=server, scenario=scenario, kind=kind, rep=rep, rate=rate,
                 host_busy_pct=busy)
        return "\t".join(str(v[c]) for c in COLUMNS)
    s = j.get("server") or {}
    cpu = s.get("publish_cpu_user_s", 0) + s.get("publish_cpu_sys_s", 0)
    deliveries = j["deliveries"]
    rss = (s.get("rss_subscribed_kib") or 0) - (s.get("rss_before_kib") or 0)
    ms = lambda h, p: h[p] / 1000
    clean = (
        j["connected"] == int(subs) and j["failed"] == 0 and j["lost"] == 0
        and j["events_lost"] == 0 and j["duplicated"] == 0 and j["out_of_order"] == 0
        and j["misrouted"] == 0 and j["publish_errors"] == 0
        and j["events_published"] == j["events_planned"]
        and deliveries == j["expected_deliveries"]
    )
    v = {
        "server": server, "scenario": scenario, "kind": kind, "rep": rep, "rate": rate,
        "connected": j["connected"],
        "deliveries_per_s": round(j["deliveries_per_sec"]),
        "lost": j["events_lost"], "duplicated": j["duplicated"],
        "out_of_order": j["out_of_order"], "publish_errors": j["publish_errors"],
        "clean": int(clean),
        "last_p50_ms": ms(j["last_subscriber_us"], "p50"),
        "last_p99_ms": ms(j["last_subscriber_us"], "p99"),
        "last_max_ms": ms(j["last_subscriber_us"], "max"),
        "delivery_p50_ms": ms(j["delivery_us"], "p50"),
        "delivery_p99_ms": ms(j["delivery_us"], "p99"),
        "cpu_us": round(cpu * 1e6 / deliveries, 2) if deliveries else 0,
        "kernel_pct": round(100 * s.get("publish_cpu_sys_s", 0) / cpu) if cpu else 0,
        "kib_per_sub": round(rss / int(subs), 2),
        "deliveries": deliveries, "expected": j["expected_deliveries"],
        "published": j["events_published"], "host_busy_pct": busy,
    }
    return "\t".join(str(v[c]) for c in COLUMNS)


def read(path):
    rows = []
    with open(path) as f:
        for l in f:
            parts = l.rstrip("\n").split("\t")
            if len(parts) != len(COLUMNS):
                continue
            r = dict(zip(COLUMNS, parts))
            for c in COLUMNS[3:]:
                r[c] = float(r[c])
            rows.append(r)
    return rows


def med(xs):
    return statistics.median(xs) if xs else 0


def saturation(rows, server, scenario, rep):
    """The best clean step of one ladder, and how the ladder went past it."""
    steps = [r for r in rows if (r["server"], r["scenario"], r["kind"], r["rep"])
             == (server, scenario, "step", rep)]
    steps.sort(key=lambda r: r["rate"])
    if not steps:
        return None, "no steps"
    clean = [r for r in steps if r["clean"]]
    best = max(clean, key=lambda r: r["deliveries_per_s"]) if clean else None
    dirty = [r for r in steps if not r["clean"]]
    if dirty:
        why = f"loss/errors at {dirty[0]['rate']:.0f}/s"
    elif best is steps[-1]:
        why = "still growing at the top rate"
    else:
        why = f"peak at {best['rate']:.0f}/s"
    return best, why


def table(path):
    rows = read(path)
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    servers = ["holdfast", "nchan"]
    names = {"one": "10k subscribers, 1 channel", "hundred": "10k subscribers, 100 channels"}
    print("| scenario | server | saturated deliveries/s | at events/s | µs CPU/delivery saturated "
          "| µs CPU/delivery (latency run) | kernel % | to last subscriber p50 / p99 / max ms "
          "| delivery p50 / p99 ms | KiB per idle subscriber | lost / duplicated (all runs) "
          "| saturation ladder, per rep |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ratios = []
    for sc in scenarios:
        fig = {}
        for sv in servers:
            lat = [r for r in rows if (r["server"], r["scenario"], r["kind"]) == (sv, sc, "latency")]
            if not lat:
                continue
            reps = sorted({r["rep"] for r in rows if (r["server"], r["scenario"]) == (sv, sc)})
            sat = [saturation(rows, sv, sc, rep) for rep in reps]
            sat_best = [b for b, _ in sat if b]
            mine = [r for r in rows if (r["server"], r["scenario"]) == (sv, sc)]
            f = {
                "sat": med([b["deliveries_per_s"] for b in sat_best]),
                "sat_rate": med([b["rate"] for b in sat_best]),
                "sat_cpu": med([b["cpu_us"] for b in sat_best]),
                "cpu": med([r["cpu_us"] for r in lat]),
                "kern": med([r["kernel_pct"] for r in lat]),
                "l50": med([r["last_p50_ms"] for r in lat]),
                "l99": med([r["last_p99_ms"] for r in lat]),
                "lmax": med([r["last_max_ms"] for r in lat]),
                "d50": med([r["delivery_p50_ms"] for r in lat]),
                "d99": med([r["delivery_p99_ms"] for r in lat]),
                "kib": med([r["kib_per_sub"] for r in lat]),
                "lost": sum(r["lost"] for r in mine),
                "dup": sum(r["duplicated"] for r in mine),
                "why": "; ".join(w for _, w in sat),
            }
            fig[sv] = f
            print(f"| {names.get(sc, sc)} | {sv} | {f['sat']:,.0f} | {f['sat_rate']:,.0f} "
                  f"| {f['sat_cpu']:.2f} | {f['cpu']:.2f} | {f['kern']:.0f} "
                  f"| {f['l50']:.1f} / {f['l99']:.1f} / {f['lmax']:.1f} "
                  f"| {f['d50']:.1f} / {f['d99']:.1f} | {f['kib']:.2f} "
                  f"| {f['lost']:.0f} / {f['dup']:.0f} | {f['why']} |")
        if len(fig) == 2:
            ratios.append((sc, fig["holdfast"], fig["nchan"]))
    print()
    print("Ratios holdfast / nchan (medians), with the targets:")
    print()
    print("| scenario | saturated deliveries/s (target ≥ 1.4×) | µs CPU/delivery, latency run "
          "(target ≤ 0.7×) | µs CPU/delivery, saturated | to last subscriber p99 (target ≤ 0.5×) "
          "| memory per idle subscriber (target ≤ 1 KiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    div = lambda a, b: f"{a / b:.2f}×" if b else "–"
    for sc, h, n in ratios:
        print(f"| {names.get(sc, sc)} | {div(h['sat'], n['sat'])} | {div(h['cpu'], n['cpu'])} "
              f"| {div(h['sat_cpu'], n['sat_cpu'])} | {div(h['l99'], n['l99'])} "
              f"| {h['kib']:.2f} KiB ({div(h['kib'], n['kib'])}) |")
    print()
    print("<details><summary>Every run</summary>")
    print()
    print("| rep | scenario | kind | server | events/s | subscribed | deliveries/s | lost | dup "
          "| ooo | publish errors | clean | last p50/p99/max ms | delivery p50/p99 ms "
          "| µs CPU/delivery | kernel % | KiB/sub | host busy before % |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rep']:.0f} | {r['scenario']} | {r['kind']} | {r['server']} | {r['rate']:.0f} "
              f"| {r['connected']:.0f} | {r['deliveries_per_s']:,.0f} | {r['lost']:.0f} "
              f"| {r['duplicated']:.0f} | {r['out_of_order']:.0f} | {r['publish_errors']:.0f} "
              f"| {'yes' if r['clean'] else 'NO'} "
              f"| {r['last_p50_ms']:.1f} / {r['last_p99_ms']:.1f} / {r['last_max_ms']:.1f} "
              f"| {r['delivery_p50_ms']:.1f} / {r['delivery_p99_ms']:.1f} | {r['cpu_us']:.2f} "
              f"| {r['kernel_pct']:.0f} | {r['kib_per_sub']:.2f} | {r['host_busy_pct']:.0f} |")
    print()
    print("</details>")


if __name__ == "__main__":
    if sys.argv[1] == "line":
        print(line(*sys.argv[2:10]))
    elif sys.argv[1] == "table":
        table(sys.argv[2])
