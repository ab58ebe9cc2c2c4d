"""An aiohttp application; run directly it uses web.run_app on the given port."""

import asyncio
import sys

from aiohttp import web


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(60)  # LINE:aio-slow
    return web.Response(text="slow")


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def kind(request: web.Request) -> web.Response:
    """The class of the task handling this request."""
    cls = type(asyncio.current_task())
    return web.Response(text=f"{cls.__module__}.{cls.__qualname__}")


app = web.Application()
app.router.add_get("/slow", slow)
app.router.add_get("/", ok)
app.router.add_get("/kind", kind)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: print("READY", flush=True))
