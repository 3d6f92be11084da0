#!/usr/bin/env python3
"""An independent WebSocket client (the `websockets` package) against holdfast's /ws echo.

Usage: ws_client.py URL [plain|deflate|deflate-no-takeover]
Sends text (with non-ASCII), binary, compressible and incompressible messages, checks each
echo, pings and waits for the pong, then closes with 1000 and checks the server's close code.
With a deflate mode it offers permessage-deflate (RFC 7692) and checks it was accepted with the
parameters asked for. Prints "ok" on success; any failure raises (non-zero exit).
"""
import asyncio, os, sys
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


async def main(url, mode):
    kwargs = dict(max_size=4 << 20, ping_interval=None, compression=None)
    if mode == "deflate":
        kwargs["extensions"] = [ClientPerMessageDeflateFactory(client_max_window_bits=True)]
    elif mode == "deflate-no-takeover":
        kwargs["extensions"] = [ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True,
            server_max_window_bits=10)]
    async with connect(url, **kwargs) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        if mode == "plain":
            assert ext == "", ext
        else:
            assert ext.startswith("permessage-deflate"), ext
            if mode == "deflate-no-takeover":
                for p in ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits=10"]:
                    assert p in ext, ext
        text = "the quick brown fox jumps over the lazy dog; " * 200
        for msg in ["hello", "κόσμε 😀", b"\x00\x01\xff", text, text.encode(), os.urandom(1 << 20), text * 10]:
            await ws.send(msg)
            echo = await asyncio.wait_for(ws.recv(), 10)
            assert echo == msg, f"echo mismatch for a {type(msg).__name__} of {len(msg)}"
        pong = await ws.ping(b"py-ping")
        await asyncio.wait_for(pong, 10)
        await ws.close(code=1000, reason="done")
        assert ws.close_code == 1000, ws.close_code
    print("ok")


asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "plain"))
