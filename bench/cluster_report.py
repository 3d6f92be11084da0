"""bench/cluster.sh's figures: turns one `wsload subscribe --json` report (with the script's
own readings) into a line of runs.jsonl (`line`), says it in one line (`brief`), and turns
runs.jsonl into the Markdown of bench/results/cluster.md (`table`): medians over the reps per
scenario and server, the ratios next to the project's targets, then every run.

  python3 bench/cluster_report.py line WSLOAD_JSON EXTRA_JSON
  python3 bench/cluster_report.py brief ROW_JSON
  python3 bench/cluster_report.py table runs.jsonl

EXTRA_JSON: server, scenario, rep, rate, subs, host_busy_pct, redis_pid (or null), proxy_pids,
bus_idle_s, bus_idle_in, bus_idle_out (the nodes' bus counters' growth while idle before the
run), spread ("a/b/c" subscribers per node), log_warnings.
"""

import json
import statistics
import sys

BUS_IN = 'holdfast_channel_bus_messages_total{direction="in"}'
BUS_OUT = 'holdfast_channel_bus_messages_total{direction="out"}'
BUS_ERRORS = "holdfast_channel_bus_errors_total"
SERVERS = ["holdfast-cluster", "holdfast-single", "holdfast-single-proxied", "nchan-redis"]
NAMES = {"one": "1 channel", "hundred": "100 channels"}


def line(text, extra_text):
    row = json.loads(extra_text)
    try:
        j = json.loads(text)
    except ValueError:
        j = None
    row["ok"] = bool(j)
    if not j:
        return json.dumps(row)
    s = j.get("server") or {}
    deliveries = j["deliveries"]
    per = lambda cpu: round(cpu * 1e6 / deliveries, 3) if deliveries else 0
    cpu_of = lambda p: p.get("publish_cpu_user_s", 0) + p.get("publish_cpu_sys_s", 0)
    cpu = cpu_of(s)
    others = {p["pid"]: p for p in s.get("others", [])}
    redis = others.get(row.get("redis_pid"))
    redis_cpu = cpu_of(redis) if redis else 0
    proxy_cpu = sum(cpu_of(others[p]) for p in row.get("proxy_pids", []) if p in others)
    rss = (s.get("rss_subscribed_kib") or 0) - (s.get("rss_before_kib") or 0)
    ms = lambda h, p: h[p] / 1000
    clean = (
        j["connected"] == row["subs"] and j["failed"] == 0 and j["lost"] == 0
        and j["events_lost"] == 0 and j["duplicated"] == 0 and j["out_of_order"] == 0
        and j["misrouted"] == 0 and j["publish_errors"] == 0
        and j["events_published"] == j["events_planned"]
        and deliveries == j["expected_deliveries"]
    )
    published = j["events_published"]
    m = s.get("metrics")
    if m and published:
        window = m.get("window_s", 0)
        idle = row.get("bus_idle_s") or 0
        rate = lambda n: n / idle if idle else 0
        bus = m.get("sum", {})
        row.update(
            bus_window_s=window,
            bus_complete=m.get("complete", False),
            bus_out_per_event=round(bus.get(BUS_OUT, 0) / published, 3),
            bus_in_per_event=round(bus.get(BUS_IN, 0) / published, 3),
            bus_out_net=round((bus.get(BUS_OUT, 0) - rate(row["bus_idle_out"]) * window)
                              / published, 3),
            bus_in_net=round((bus.get(BUS_IN, 0) - rate(row["bus_idle_in"]) * window)
                             / published, 3),
            bus_errors=bus.get(BUS_ERRORS, 0),
            # Per node: out, in over the window.
            bus_per_node=[[(u.get("delta") or {}).get(BUS_OUT), (u.get("delta") or {}).get(BUS_IN)]
                          for u in m.get("urls", [])],
        )
    row.update(
        connected=j["connected"], failed=j["failed"], dropped=j["lost"],
        deliveries=deliveries, expected=j["expected_deliveries"],
        published=published, planned=j["events_planned"],
        deliveries_per_s=round(j["deliveries_per_sec"]),
        lost=j["events_lost"], duplicated=j["duplicated"], out_of_order=j["out_of_order"],
        misrouted=j["misrouted"], publish_errors=j["publish_errors"], clean=clean,
        delivery_p50_ms=ms(j["delivery_us"], "p50"),
        delivery_p99_ms=ms(j["delivery_us"], "p99"),
        delivery_max_ms=ms(j["delivery_us"], "max"),
        last_p50_ms=ms(j["last_subscriber_us"], "p50"),
        last_p99_ms=ms(j["last_subscriber_us"], "p99"),
        last_max_ms=ms(j["last_subscriber_us"], "max"),
        publish_p99_ms=ms(j["publish_us"], "p99") if "publish_us" in j else 0,
        cpu_us=per(cpu),
        kernel_pct=round(100 * s.get("publish_cpu_sys_s", 0) / cpu) if cpu else 0,
        redis_cpu_us=per(redis_cpu),
        total_cpu_us=per(cpu + redis_cpu),
        proxy_cpu_us=per(proxy_cpu),
        kib_per_sub=round(rss / row["subs"], 2) if row["subs"] else 0,
        node_cpu_us=[per(cpu_of(p)) for p in s.get("processes", [])],
    )
    return json.dumps(row)


def brief(row_text):
    r = json.loads(row_text)
    head = f"rep {r['rep']} {r['scenario']} {r['server']}:"
    if not r["ok"]:
        return f"{head} NO REPORT (see the run's wsload.log)"
    bus = ""
    if "bus_out_per_event" in r:
        bus = (f", bus/event out {r['bus_out_per_event']} in {r['bus_in_per_event']} "
               f"(net {r['bus_out_net']} / {r['bus_in_net']})")
    return (f"{head} {'clean' if r['clean'] else 'NOT CLEAN'}, {r['connected']} subscribed "
            f"({r['spread'] or 'direct'}), {r['deliveries']}/{r['expected']} deliveries, "
            f"{r['deliveries_per_s']:,}/s, lost {r['lost']} dup {r['duplicated']}, delivery "
            f"p50/p99 {r['delivery_p50_ms']:.1f}/{r['delivery_p99_ms']:.1f} ms, last p99 "
            f"{r['last_p99_ms']:.1f} ms, µs CPU/delivery nodes {r['cpu_us']:.2f} redis "
            f"{r['redis_cpu_us']:.2f} proxy {r['proxy_cpu_us']:.2f}{bus}, "
            f"log warnings {r['log_warnings']}, host busy before {r['host_busy_pct']} %")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".2f", none="–"):
    return none if x is None else format(x, spec)


def table(path):
    with open(path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    servers = [s for s in SERVERS if any(r["server"] == s for r in rows)]
    print("| scenario | server | deliveries/s | delivery p50 / p99 ms | to last subscriber "
          "p50 / p99 / max ms | µs CPU/delivery, nodes | Redis µs/delivery | total with Redis "
          "| HAProxy µs/delivery | kernel % (nodes) | bus messages/event out / in (net of idle) "
          "| subscribers per node | lost / duplicated (all runs) | log warnings (all runs) "
          "| runs clean |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    figs = {}
    for sc in scenarios:
        for sv in servers:
            mine = [r for r in rows if (r["server"], r["scenario"]) == (sv, sc)]
            if not mine:
                continue
            good = [r for r in mine if r["ok"]]
            g = lambda k: med([r.get(k) for r in good])
            f = {k: g(k) for k in [
                "deliveries_per_s", "delivery_p50_ms", "delivery_p99_ms", "last_p50_ms",
                "last_p99_ms", "last_max_ms", "cpu_us", "redis_cpu_us", "total_cpu_us",
                "proxy_cpu_us", "kernel_pct", "bus_out_net", "bus_in_net",
                "bus_out_per_event", "bus_in_per_event"]}
            f["lost"] = sum(r.get("lost", 0) for r in good)
            f["dup"] = sum(r.get("duplicated", 0) for r in good)
            f["warn"] = sum(r.get("log_warnings", 0) for r in mine)
            f["clean"] = f"{sum(1 for r in good if r['clean'])}/{len(mine)}"
            f["any"] = bool(good)
            figs[(sc, sv)] = f
            redis = sv in ("holdfast-cluster", "nchan-redis")
            bus = (f"{fmt(f['bus_out_net'])} / {fmt(f['bus_in_net'])} "
                   f"({fmt(f['bus_out_per_event'])} / {fmt(f['bus_in_per_event'])} raw)"
                   if f["bus_out_net"] is not None else "–")
            spread = ", ".join(r.get("spread") or "direct" for r in mine)
            print(f"| {NAMES.get(sc, sc)} | {sv} | {fmt(f['deliveries_per_s'], ',.0f')} "
                  f"| {fmt(f['delivery_p50_ms'], '.1f')} / {fmt(f['delivery_p99_ms'], '.1f')} "
                  f"| {fmt(f['last_p50_ms'], '.1f')} / {fmt(f['last_p99_ms'], '.1f')} / "
                  f"{fmt(f['last_max_ms'], '.1f')} | {fmt(f['cpu_us'])} "
                  f"| {fmt(f['redis_cpu_us']) if redis else '–'} "
                  f"| {fmt(f['total_cpu_us'])} "
                  f"| {fmt(f['proxy_cpu_us']) if sv != 'holdfast-single' else '–'} "
                  f"| {fmt(f['kernel_pct'], '.0f')} | {bus} | {spread} "
                  f"| {f['lost']} / {f['dup']} | {f['warn']} | {f['clean']} |")
    print()
    print("Ratios (medians), with the targets:")
    print()
    proxied = any(r["server"] == "holdfast-single-proxied" for r in rows)
    print("| scenario | µs CPU/delivery, nodes: holdfast cluster / nchan on Redis (target ≤ 0.7×) "
          "| with Redis's CPU (target ≤ 0.7×) | lost, holdfast cluster / nchan (target 0) "
          "| cluster / single-node delivery p99 (target ≤ 2×) "
          "| cluster / single-node to-last-subscriber p99 "
          + ("| cluster / single node behind HAProxy, delivery p99 " if proxied else "")
          + "| cluster / nchan delivery p99 |")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if proxied else "") + "---:|")

    def ratio(a, b, target=None):
        if a is None or not b:
            return "–"
        x = a / b
        mark = "" if target is None else (" ✓" if x <= target else " ✗")
        return f"{x:.2f}×{mark}"

    for sc in scenarios:
        c = figs.get((sc, "holdfast-cluster"))
        s = figs.get((sc, "holdfast-single"))
        p = figs.get((sc, "holdfast-single-proxied"))
        n = figs.get((sc, "nchan-redis"))
        if not c:
            continue
        get = lambda f, k: f[k] if f else None
        lost = lambda f: "–" if not f or not f["any"] else (
            f"{f['lost']}{' ✓' if f['lost'] == 0 else ' ✗'}")
        print(f"| {NAMES.get(sc, sc)} | {ratio(c['cpu_us'], get(n, 'cpu_us'), 0.7)} "
              f"| {ratio(c['total_cpu_us'], get(n, 'total_cpu_us'), 0.7)} "
              f"| {lost(c)} / {lost(n)} "
              f"| {ratio(c['delivery_p99_ms'], get(s, 'delivery_p99_ms'), 2)} "
              f"| {ratio(c['last_p99_ms'], get(s, 'last_p99_ms'))} "
              + (f"| {ratio(c['delivery_p99_ms'], get(p, 'delivery_p99_ms'))} " if proxied else "")
              + f"| {ratio(c['delivery_p99_ms'], get(n, 'delivery_p99_ms'))} |")
    print()
    print("<details><summary>Every run</summary>")
    print()
    print("| rep | scenario | server | events/s | subscribed (per node) | deliveries/s | lost "
          "| dup | ooo | publish errors | clean | delivery p50/p99/max ms "
          "| last p50/p99/max ms | µs CPU/delivery nodes (each) | Redis | HAProxy "
          "| kernel % | KiB/sub (nodes) | bus/event out / in, raw (net) | bus errors "
          "| log warnings | host busy before % |")
    print("|---:|---|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:"
          "|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        head = f"| {r['rep']} | {r['scenario']} | {r['server']} | {r['rate']} "
        if not r["ok"]:
            print(head + "| no report |" + " |" * 17 + f" {r['host_busy_pct']} |")
            continue
        bus = "–"
        if "bus_out_per_event" in r:
            bus = (f"{r['bus_out_per_event']:.2f} / {r['bus_in_per_event']:.2f} "
                   f"({r['bus_out_net']:.2f} / {r['bus_in_net']:.2f})")
        each = " + ".join(f"{x:.2f}" for x in r.get("node_cpu_us", []))
        print(head + f"| {r['connected']} ({r['spread'] or 'direct'}) "
              f"| {r['deliveries_per_s']:,} | {r['lost']} | {r['duplicated']} "
              f"| {r['out_of_order']} | {r['publish_errors']} | {'yes' if r['clean'] else 'NO'} "
              f"| {r['delivery_p50_ms']:.1f} / {r['delivery_p99_ms']:.1f} / "
              f"{r['delivery_max_ms']:.1f} | {r['last_p50_ms']:.1f} / {r['last_p99_ms']:.1f} / "
              f"{r['last_max_ms']:.1f} | {r['cpu_us']:.2f} ({each}) | {r['redis_cpu_us']:.2f} "
              f"| {r['proxy_cpu_us']:.2f} | {r['kernel_pct']} | {r['kib_per_sub']:.2f} | {bus} "
              f"| {r.get('bus_errors', '–')} | {r['log_warnings']} | {r['host_busy_pct']} |")
    print()
    print("</details>")


if __name__ == "__main__":
    if sys.argv[1] == "line":
        print(line(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "brief":
        print(brief(sys.argv[2]))
    elif sys.argv[1] == "table":
        table(sys.argv[2])
