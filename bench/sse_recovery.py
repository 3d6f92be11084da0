#!/usr/bin/env python3
"""Recovery at scale (issue 16): SUBS Server-Sent Events subscribers on one channel all lose
their connection, MISSED events are published meanwhile, and all of them reconnect at once with
Last-Event-ID. Measures how long until every subscriber has recovered every missed event (and
each subscriber's own time), checks that nothing is lost, duplicated or reordered, and reads the
server's CPU over the reconnect window. holdfast (its history, CHANNELS.md §4) and nginx + nchan
(its message buffer, bench/nginx-nchan.conf with an EventSource subscriber) take turns, rep by
rep, each server alone on CPU 0 and this client on CPU 1.

    python3 bench/sse_recovery.py                      # 10,000 subscribers, 100 missed, 3 reps
    python3 bench/sse_recovery.py --subs 2000 --reps 1 --peers holdfast

The client is Python (asyncio): its own parsing is part of the wall time, the same for both
servers; the server-side figure to compare is CPU per recovered event.
"""
import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF_PORT, NG_PORT = 18390, 18391
CHANNEL = "recover"
DATA_RE = re.compile(rb'data: (?:\{"channel":"[^"]*","data":")?(\d+)')
ID_RE = re.compile(rb"^id: ?(.*)$", re.M)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Chunked:
    """Undoes the chunked coding incrementally; `body` grows with what is decoded."""

    def __init__(self):
        self.raw = b""
        self.left = None  # bytes of chunk data still to come; None: a size line is next
        self.trail = False  # the chunk's CRLF is next
        self.body = bytearray()

    def feed(self, data):
        self.raw += data
        while True:
            if self.trail:
                if len(self.raw) < 2:
                    return
                self.raw = self.raw[2:]
                self.trail = False
            if self.left is None:
                end = self.raw.find(b"\r\n")
                if end < 0:
                    return
                self.left = int(self.raw[:end].split(b";")[0], 16)
                self.raw = self.raw[end + 2:]
                if self.left == 0:
                    raise EOFError("the server ended the stream")
            n = min(self.left, len(self.raw))
            self.body += self.raw[:n]
            self.raw = self.raw[n:]
            self.left -= n
            if self.left:
                return
            self.left = None
            self.trail = True


class Stream:
    def __init__(self, port, path, last_id=None):
        self.port, self.path, self.last_id = port, path, last_id
        self.data = []
        self.ids = []
        self.buf = b""

    async def open(self):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        extra = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id else ""
        self.w.write(
            f"GET {self.path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
        )
        head = await self.r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n")[0].decode())
        self.chunked = b"chunked" in head.lower()
        self.dec = Chunked()

    async def until(self, count):
        """Reads until `count` events with data have come."""
        while len(self.data) < count:
            got = await self.r.read(65536)
            if not got:
                raise EOFError("closed")
            if self.chunked:
                self.dec.feed(got)
                self.buf += bytes(self.dec.body)
                self.dec.body.clear()
            else:
                self.buf += got
            while True:
                end = self.buf.find(b"\n\n")
                if end < 0:
                    break
                block, self.buf = self.buf[: end + 2], self.buf[end + 2:]
                m = DATA_RE.search(block)
                i = ID_RE.search(block)
                if i:
                    self.ids.append(i.group(1).decode())
                if m:
                    self.data.append(int(m.group(1)))

    def close(self):
        self.w.close()


def publish_holdfast(i):
    body = json.dumps({"name": "ev", "channel": CHANNEL, "data": str(i)})
    path = "/apps/app-id/events"
    params = {
        "auth_key": "app-key",
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body.encode()).hexdigest(),
    }
    qs = "&".join(f"{k}={params[k]}" for k in sorted(params))
    sig = hmac.new(b"app-secret", f"POST\n{path}\n{qs}".encode(), hashlib.sha256).hexdigest()
    url = f"http://127.0.0.1:{HF_PORT}{path}?{qs}&auth_signature={sig}"
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def publish_nchan(i):
    req = urllib.request.Request(f"http://127.0.0.1:{NG_PORT}/pub/{CHANNEL}", data=str(i).encode(),
                                 method="POST")
    urllib.request.urlopen(req, timeout=10).read()


def start(peer, work, missed):
    if peer == "holdfast":
        cmd = ["taskset", "-c", "0", os.path.join(ROOT, "target/release/holdfast"), "serve",
               "--set", f"server.listen=127.0.0.1:{HF_PORT}", "--set", "server.tls_listen=",
               "--set", "server.workers=1", "--set", f"channels.history_size={max(missed, 100)}",
               "--set", "http.keepalive_requests=1000000"]
        proc = subprocess.Popen(cmd, stderr=open(os.path.join(work, "holdfast.log"), "a"))
        url, measured = f"http://127.0.0.1:{HF_PORT}/plaintext", proc.pid
    else:
        conf = open(os.path.join(ROOT, "bench/nginx-nchan.conf")).read()
        conf = conf.replace("__DIR__", work).replace("__PORT__", str(NG_PORT))
        open(os.path.join(work, "nginx.conf"), "w").write(conf)
        os.makedirs(os.path.join(work, "body"), exist_ok=True)
        proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", os.path.join(work, "nginx.conf"),
                                 "-p", work], stderr=open(os.path.join(work, "nginx.log"), "a"))
        url, measured = f"http://127.0.0.1:{NG_PORT}/pub/up", None
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except urllib.error.HTTPError:
            break
        except Exception:
            time.sleep(0.1)
    if measured is None:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        measured = int(out[0])
    return proc, measured


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_run(peer, subs, missed, work):
    proc, pid = start(peer, work, missed)
    try:
        port = HF_PORT if peer == "holdfast" else NG_PORT
        path = f"/app/app-key/events?channel={CHANNEL}" if peer == "holdfast" else f"/sub/{CHANNEL}"
        publish = publish_holdfast if peer == "holdfast" else publish_nchan
        streams = [Stream(port, path) for _ in range(subs)]
        sem = asyncio.Semaphore(2000)

        async def opened(s):
            async with sem:
                await s.open()

        await asyncio.gather(*(opened(s) for s in streams))
        publish(0)
        await asyncio.wait_for(asyncio.gather(*(s.until(1) for s in streams)), 60)
        last_ids = [s.ids[-1] for s in streams]
        for s in streams:
            s.close()
        await asyncio.sleep(0.5)
        for i in range(1, missed + 1):
            publish(i)
        again = [Stream(port, path, last) for last in last_ids]
        done_at = [None] * subs
        c0, t0 = cpu_ticks(pid), time.monotonic()

        async def recover(k, s):
            await s.open()
            await s.until(missed)
            done_at[k] = time.monotonic() - t0

        results = await asyncio.wait_for(
            asyncio.gather(*(recover(k, s) for k, s in enumerate(again)), return_exceptions=True), 120)
        wall = time.monotonic() - t0
        cpu = (cpu_ticks(pid) - c0) / TICK
        errors = [r for r in results if isinstance(r, Exception)]
        want = list(range(1, missed + 1))
        lost = dup = reordered = 0
        for s in again:
            got = s.data[:missed]
            lost += len(set(want) - set(got))
            dup += len(got) - len(set(got))
            reordered += int(got != sorted(got))
        times = sorted(t for t in done_at if t is not None)
        for s in again:
            s.close()
        recovered = sum(len(s.data[:missed]) for s in again)
        return {
            "peer": peer, "subs": subs, "missed": missed, "errors": len(errors),
            "first_error": str(errors[0]) if errors else "",
            "wall_s": wall,
            "p50_s": times[len(times) // 2] if times else None,
            "p99_s": times[int(len(times) * 0.99) - 1] if times else None,
            "lost": lost, "dup": dup, "reordered": reordered,
            "server_cpu_s": cpu, "us_per_event": cpu * 1e6 / max(recovered, 1),
            "recovered": recovered,
        }
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", type=int, default=10000)
    ap.add_argument("--missed", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peers", default="holdfast,nchan")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The first streams are closed before the reconnects open: one set at a time.
    if hard < a.subs + 1000:
        sys.exit(f"ulimit -Hn {hard} is below --subs + 1000")
    os.sched_setaffinity(0, {1})
    for kv in ("net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535"):
        subprocess.run(["sysctl", "-qw", kv], capture_output=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "holdfast"], cwd=ROOT, check=True)
    peers = a.peers.split(",")
    if "nchan" in peers and not shutil.which("nginx"):
        sys.exit("nginx with libnginx-mod-nchan is not installed")
    runs = []
    for rep in range(a.reps):
        order = peers if rep % 2 == 0 else peers[::-1]
        for peer in order:
            work = tempfile.mkdtemp(prefix="holdfast-recovery-")
            r = asyncio.run(one_run(peer, a.subs, a.missed, work))
            shutil.rmtree(work, ignore_errors=True)
            r["rep"] = rep + 1
            runs.append(r)
            print(json.dumps(r), file=sys.stderr)
    print(f"#### Recovery: {a.subs} SSE subscribers reconnect at once, each missed {a.missed} events; "
          f"{a.reps} reps, medians\n")
    print(f"Machine: {os.cpu_count()} cores, Linux {os.uname().release}; "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}; command: `python3 bench/sse_recovery.py "
          f"--subs {a.subs} --missed {a.missed} --reps {a.reps} --peers {a.peers}`\n")
    print("| server | all recovered (s) | per subscriber p50 / p99 (s) | server CPU (s) | µs CPU per recovered event | lost / dup / reordered | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for peer in peers:
        rs = [r for r in runs if r["peer"] == peer]
        med = lambda k: statistics.median(r[k] for r in rs if r[k] is not None)
        print(f"| {peer} | {med('wall_s'):.2f} | {med('p50_s'):.2f} / {med('p99_s'):.2f} | "
              f"{med('server_cpu_s'):.2f} | {med('us_per_event'):.2f} | "
              f"{sum(r['lost'] for r in rs)} / {sum(r['dup'] for r in rs)} / {sum(r['reordered'] for r in rs)} | "
              f"{sum(r['errors'] for r in rs)} |")


if __name__ == "__main__":
    main()
