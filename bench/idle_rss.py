#!/usr/bin/env python3
"""Server RSS per idle connection: holdfast versus its peers in the same run.

For each server (one worker / one core each, pinned to CPU 0), warm it up with a burst of
short connections, read the serving process's RSS, open N connections that each do one
exchange and then stay idle, read RSS again, and report (after - before) / N. Interleaved rep
by rep; medians. Modes:

    http                  one keep-alive GET each; holdfast and nginx
    tls                   one keep-alive GET over TLS 1.3 each; holdfast and nginx (OpenSSL)
    ws                    WebSocket upgrade and one 64-byte echo each; holdfast,
                          fastwebsockets and tokio-tungstenite (bench/peers)
    ws-deflate            the same, offering permessage-deflate with context takeover and
                          echoing one compressed message; holdfast runs with
                          websocket.deflate_context_takeover=true, so it keeps contexts
    ws-deflate-nct        the same with server_ and client_no_context_takeover (no state kept)
    pusher                a Pusher channels subscriber (holdfast only): /app/app-key, then one
                          public channel (of 100) and one presence channel (of 100) as its own
                          user, signed as CHANNELS.md says: the issue-15 memory target's shape
    h2c                   HTTP/2 with prior knowledge: the preface, SETTINGS, one GET on stream 1
                          read to its end, SETTINGS acknowledged; holdfast and nginx (http2)
    h2                    the same over TLS 1.3 with ALPN h2; holdfast and nginx (OpenSSL)
    sse                   a Server-Sent Events subscriber (holdfast only): GET
                          /app/app-key/events on one public channel (of 100), held after its
                          first chunk (retry and id): the issue-16 memory target's shape

    python3 bench/idle_rss.py [--mode http] [--conns 10000] [--reps 3]

Needs: release builds (cargo build --release; for ws, cd bench/peers && cargo build
--release), nginx for http, and `ulimit -n` above N (the script raises its soft limit).
"""
import argparse, hashlib, hmac, itertools, json, os, re, resource, shutil, socket, ssl, statistics, struct, subprocess, sys, tempfile, time, zlib

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


def ws_frame(opcode, payload, rsv1=False):
    mask = b"\x11\x22\x33\x44"
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def recv_until(s, pred):
    got = b""
    while not pred(got):
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("server closed")
        got += chunk
    return got


def ws_exchange(s, mode):
    ext = {"ws": "",
           "ws-deflate": "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
           "ws-deflate-nct": "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                             "client_no_context_takeover\r\n"}[mode]
    s.sendall(("GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + ext + "\r\n").encode())
    head = recv_until(s, lambda g: b"\r\n\r\n" in g)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:80])
    if mode == "ws":
        s.sendall(ws_frame(2, b"x" * 64))
        recv_until(s, lambda g: len(g) >= 66)
    else:
        # One compressible message each way, so a context-keeping server allocates its state.
        c = zlib.compressobj(wbits=-15)
        body = c.compress(b"idle connection, compressible text. " * 20) + c.flush(zlib.Z_SYNC_FLUSH)
        s.sendall(ws_frame(2, body[:-4], rsv1=True))
        recv_until(s, lambda g: len(g) >= 2 and len(g) >= 2 + (g[1] & 0x7f))


SUBSCRIBERS = itertools.count()


def pusher_exchange(s):
    """Upgrade to /app/app-key, then subscribe to a public and a presence channel."""
    i = next(SUBSCRIBERS)
    s.sendall(("GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    got = recv_until(s, lambda g: b"connection_established" in g and g.rstrip().endswith(b"}"))
    socket_id = json.loads(json.loads(got[got.index(b'{"event"'):])["data"])["socket_id"]
    public, presence = f"idle-{i % 100}", f"presence-idle-{i % 100}"
    data = json.dumps({"user_id": str(i)})
    sig = hmac.new(b"app-secret", f"{socket_id}:{presence}:{data}".encode(), hashlib.sha256).hexdigest()
    for sub in ({"channel": public},
                {"channel": presence, "auth": f"app-key:{sig}", "channel_data": data}):
        s.sendall(ws_frame(1, json.dumps({"event": "pusher:subscribe", "data": sub}).encode()))
    recv_until(s, lambda g: g.count(b"subscription_succeeded") >= 2)


def sse_exchange(s):
    """Open an event stream on one of 100 public channels; wait for its first chunk."""
    i = next(SUBSCRIBERS)
    s.sendall(f"GET /app/app-key/events?channel=idle-{i % 100} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    recv_until(s, lambda g: b"retry: " in g and g.endswith(b"\n\n\r\n"))


def h2_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


# GET /plaintext: :method GET and :scheme http indexed, :path and :authority as literals with
# indexed names, never added to the table (RFC 7541 §6).
H2_GET = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"")
          + h2_frame(1, 0x5, 1, b"\x82\x86\x04\x0a/plaintext\x01\x05bench"))


def h2_exchange(s):
    """One GET on stream 1, read until its END_STREAM; then the server's SETTINGS acknowledged."""
    s.sendall(H2_GET)
    buf = b""
    while True:
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + n:]
            if stream == 1 and flags & 1 and kind in (0, 1):
                s.sendall(h2_frame(4, 1, 0, b""))
                return
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the response ended")
        buf += chunk


TLS_CLIENT = ssl.create_default_context()
TLS_CLIENT.check_hostname = False
TLS_CLIENT.verify_mode = ssl.CERT_NONE
H2_TLS_CLIENT = ssl.create_default_context()
H2_TLS_CLIENT.check_hostname = False
H2_TLS_CLIENT.verify_mode = ssl.CERT_NONE
H2_TLS_CLIENT.set_alpn_protocols(["h2"])


def exchange(s, mode):
    """One exchange on a fresh connection; returns the object to keep open (TLS wraps it)."""
    if mode == "http":
        one_request(s)
    elif mode == "tls":
        s = TLS_CLIENT.wrap_socket(s, server_hostname="localhost")
        one_request(s)
    elif mode == "h2c":
        h2_exchange(s)
    elif mode == "h2":
        s = H2_TLS_CLIENT.wrap_socket(s, server_hostname="localhost")
        assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
        h2_exchange(s)
    elif mode == "pusher":
        pusher_exchange(s)
    elif mode == "sse":
        sse_exchange(s)
    else:
        ws_exchange(s, mode)
    return s


def warm(port, mode, n=2000):
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        exchange(s, mode).close()


def measure(pid, port, conns, mode):
    warm(port, mode)
    time.sleep(0.5)
    before = rss_kib(pid)
    socks = []
    for i in range(conns):
        # Spread source addresses so that many connections never exhaust ephemeral ports.
        s = socket.socket()
        s.bind((f"127.0.0.{2 + i % 200}", 0))
        s.connect(("127.0.0.1", port))
        socks.append(exchange(s, mode))
    time.sleep(1.0)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    time.sleep(1.0)
    return (after - before) / conns


def start_holdfast(port, takeover=False, tls=False, h2=False):
    exe = os.path.join(ROOT, "target/release/holdfast")
    listen = ["--set", f"server.listen=127.0.0.1:{port + 1000}",
              "--set", f"server.tls_listen=127.0.0.1:{port}"] if tls else \
        ["--set", f"server.listen=127.0.0.1:{port}", "--set", "server.tls_listen="]
    return subprocess.Popen(
        ["taskset", "-c", "0", exe, "serve", *listen, "--set", "server.workers=1",
         "--set", f"websocket.deflate_context_takeover={'true' if takeover else 'false'}",
         *(["--set", 'tls.alpn=["h2", "http/1.1"]'] if h2 else [])],
        stderr=subprocess.DEVNULL)


def start_peer(binary, port):
    exe = os.path.join(ROOT, "bench/peers/target/release", binary)
    return subprocess.Popen(["taskset", "-c", "0", exe, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)


def start_nginx(port, work, tls=False, h2=False):
    if tls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-keyout", os.path.join(work, "key.pem"), "-out", os.path.join(work, "cert.pem")],
                       check=True, capture_output=True)
    with open(os.path.join(ROOT, "bench/nginx-tls.conf" if tls else "bench/nginx.conf")) as f:
        # Idle connections are accepted at once (no deferred accept), as holdfast's are here.
        conf = f.read().replace("__DIR__", work).replace("__PORT__", str(port)).replace("__DEFERRED__", "")
    if h2:
        conf = re.sub(r"(listen [^;]*?)\s*;", r"\1 http2;", conf)
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


SERVERS = {
    "http": ["nginx", "holdfast"],
    "ws": ["holdfast", "fastwebsockets", "tokio-tungstenite"],
    "ws-deflate": ["holdfast"],
    "ws-deflate-nct": ["holdfast"],
    "tls": ["nginx", "holdfast"],
    "h2c": ["nginx", "holdfast"],
    "h2": ["nginx", "holdfast"],
    "pusher": ["holdfast"],
    "sse": ["holdfast"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=sorted(SERVERS), default="http")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = SERVERS[args.mode]
    results = {name: [] for name in servers}
    for rep in range(args.reps):
        order = servers[rep % len(servers):] + servers[:rep % len(servers)]
        for name in order:
            work = tempfile.mkdtemp(prefix="holdfast-rss.")
            port = 18090 + rep * 4 + servers.index(name)
            if name == "holdfast":
                proc = start_holdfast(port, takeover=args.mode == "ws-deflate",
                                      tls=args.mode in ("tls", "h2"), h2=args.mode == "h2")
            elif name == "nginx":
                proc = start_nginx(port, work, tls=args.mode in ("tls", "h2"),
                                   h2=args.mode in ("h2c", "h2"))
            else:
                proc = start_peer({"fastwebsockets": "fastws-echo",
                                   "tokio-tungstenite": "tungstenite-echo"}[name], port)
            try:
                wait_up(port)
                pid = nginx_worker(proc.pid) if name == "nginx" else proc.pid
                kib = measure(pid, port, args.conns, args.mode)
                results[name].append(kib)
                print(f"rep {rep + 1} {name}: {kib:.3f} KiB per idle connection", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait()
                shutil.rmtree(work, ignore_errors=True)
    uname = os.uname()
    print(f"### Idle connections ({args.mode}): server RSS per connection, {args.conns} connections, "
          f"{args.reps} reps, medians")
    print()
    print(f"Machine: {os.cpu_count()} cores, Linux {uname.release}; command: "
          f"`python3 bench/idle_rss.py --mode {args.mode} --conns {args.conns} --reps {args.reps}`")
    print()
    print("| server | KiB RSS per idle connection (median) | runs |")
    print("|---|---:|---|")
    for name in servers:
        runs = results[name]
        print(f"| {name} (one core) | {statistics.median(runs):.2f} | {', '.join(f'{x:.2f}' for x in runs)} |")


main()
