#!/usr/bin/env python3
"""An independent WebSocket client (the `websockets` package) against holdfast's /ws echo.

Usage: ws_client.py ws://HOST:PORT/ws
Sends text (with non-ASCII), binary and a 1 MiB message, checks each echo, pings and waits for
the pong, then closes with 1000 and checks the server's close code. Prints "ok" on success;
any failure raises (non-zero exit).
"""
import asyncio, os, sys
from websockets.asyncio.client import connect


async def main(url):
    async with connect(url, max_size=4 << 20, compression=None, ping_interval=None) as ws:
        for msg in ["hello", "κόσμε 😀", b"\x00\x01\xff", os.urandom(1 << 20)]:
            await ws.send(msg)
            echo = await asyncio.wait_for(ws.recv(), 10)
            assert echo == msg, f"echo mismatch for a {type(msg).__name__} of {len(msg)}"
        pong = await ws.ping(b"py-ping")
        await asyncio.wait_for(pong, 10)
        await ws.close(code=1000, reason="done")
        assert ws.close_code == 1000, ws.close_code
    print("ok")


asyncio.run(main(sys.argv[1]))
