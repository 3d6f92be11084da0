#!/usr/bin/env python3
"""Server RSS per idle keep-alive connection: holdfast versus nginx in the same run.

For each server (one worker each, pinned to CPU 0), warm it up with a burst of short
connections, read the serving process's RSS, open N connections that each make one keep-alive
request and then stay idle, read RSS again, and report (after - before) / N. Interleaved rep by
rep; medians. Usage:

    python3 bench/idle_rss.py [--conns 10000] [--reps 3]

Needs: a release build (cargo build --release), nginx, and `ulimit -n` above N (the script
raises its own soft limit to the hard one).
"""
import argparse, os, resource, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ = b"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_up(port):
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(REQ)
            s.recv(4096)
            s.close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server on port {port} did not come up")


def one_request(s):
    s.sendall(REQ)
    got = b""
    while b"Hello, World!" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("server closed")
        got += chunk


def warm(port, n=2000):
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        one_request(s)
        s.close()


def measure(pid, port, conns):
    warm(port)
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    for i in range(conns):
        # Spread source addresses so that many connections never exhaust ephemeral ports.
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i % 200}", 0))
        s.connect(("127.0.0.1", port))
        one_request(s)
        socks.append(s)
    time.sleep(1.0)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    time.sleep(1.0)
    return (after - before) / conns


def start_holdfast(port):
    exe = os.path.join(ROOT, "target/release/holdfast")
    return subprocess.Popen(
        ["taskset", "-c", "0", exe, "serve", "--set", f"server.listen=127.0.0.1:{port}",
         "--set", "server.tls_listen=", "--set", "server.workers=1"],
        stderr=subprocess.DEVNULL)


def start_nginx(port, work):
    with open(os.path.join(ROOT, "bench/nginx.conf")) as f:
        conf = f.read().replace("__DIR__", work).replace("__PORT__", str(port))
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    os.makedirs(os.path.join(work, "body"), exist_ok=True)
    return subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", path, "-p", work])


def nginx_worker(master_pid):
    for _ in range(50):
        out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
        if out:
            return int(out[0])
        time.sleep(0.1)
    sys.exit("no nginx worker")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {"nginx": [], "holdfast": []}
    for rep in range(args.reps):
        order = ["nginx", "holdfast"] if rep % 2 == 0 else ["holdfast", "nginx"]
        for name in order:
            work = tempfile.mkdtemp(prefix="holdfast-rss.")
            port = 18090 + rep * 2 + (name == "nginx")
            proc = start_holdfast(port) if name == "holdfast" else start_nginx(port, work)
            try:
                wait_up(port)
                pid = proc.pid if name == "holdfast" else nginx_worker(proc.pid)
                kib = measure(pid, port, args.conns)
                results[name].append(kib)
                print(f"rep {rep + 1} {name}: {kib:.3f} KiB per idle connection", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait()
                shutil.rmtree(work, ignore_errors=True)
    ng, hf = statistics.median(results["nginx"]), statistics.median(results["holdfast"])
    uname = os.uname()
    print(f"### Idle keep-alive connections: server RSS per connection, {args.conns} connections, "
          f"{args.reps} reps, medians")
    print()
    print(f"Machine: {os.cpu_count()} cores, Linux {uname.release}; command: "
          f"`python3 bench/idle_rss.py --conns {args.conns} --reps {args.reps}`")
    print()
    print("| server | KiB RSS per idle connection (median) | runs |")
    print("|---|---:|---|")
    print(f"| nginx (1 worker) | {ng:.2f} | {', '.join(f'{x:.2f}' for x in results['nginx'])} |")
    print(f"| holdfast (1 worker) | {hf:.2f} | {', '.join(f'{x:.2f}' for x in results['holdfast'])} |")


main()
