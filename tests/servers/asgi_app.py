"""A bare ASGI app for uvicorn: /slow parks the request in a known coroutine."""

import asyncio


async def slow_handler() -> bytes:
    await asyncio.sleep(60)  # LINE:asgi-slow
    return b"slow"


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = await slow_handler() if scope["path"] == "/slow" else b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
