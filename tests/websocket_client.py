"""A second WebSocket implementation against `atoll serve`: Python's `websockets` client.

    python websocket_client.py CAFILE URL...

For each URL (ws:// or wss://, trusting CAFILE), on a route whose max_message_size is 100:
permessage-deflate negotiated (the client offers it; its messages then go compressed), echo
of text and binary, a fragmented message, a ping answered, invalid UTF-8 closed with
1007, a message over the limit closed with 1009. Then it holds one connection per URL open,
prints `open`, and once the server closes them prints `closed CODE` for each. Every wait is
bounded.
"""
import asyncio
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

WAIT = 10


async def closed_code(ws):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def checks(url, ctx):
    async with connect(url, ssl=ctx, open_timeout=WAIT) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert extensions.startswith("permessage-deflate"), extensions
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hello"
        await ws.send(b"\x00\x01\xff")
        assert await asyncio.wait_for(ws.recv(), WAIT) == b"\x00\x01\xff"
        await ws.send(["frag", "men", "ted"])
        assert await asyncio.wait_for(ws.recv(), WAIT) == "fragmented"
        pong = await ws.ping(b"still there?")
        await asyncio.wait_for(pong, WAIT)
        await ws.close(4000, "done")
        assert ws.close_code == 4000, ws.close_code
    async with connect(url, ssl=ctx, open_timeout=WAIT) as ws:
        await ws.send(b"ok\xff\xfe", text=True)
        code = await closed_code(ws)
        assert code == 1007, code
    async with connect(url, ssl=ctx, open_timeout=WAIT) as ws:
        await ws.send(b"x" * 101)
        code = await closed_code(ws)
        assert code == 1009, code


async def main(cafile, urls):
    ctx = ssl.create_default_context(cafile=cafile)
    for url in urls:
        await checks(url, ctx if url.startswith("wss:") else None)
    held = [await connect(u, ssl=ctx if u.startswith("wss:") else None) for u in urls]
    for ws in held:
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "still here"
    print("open", flush=True)
    for ws in held:
        print("closed", await asyncio.wait_for(closed_code(ws), 3 * WAIT), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2:]))
