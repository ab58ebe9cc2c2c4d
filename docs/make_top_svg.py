"""Regenerate docs/top.svg: the Tasks screen of `loopscope top` on the demo service.

Run from the repository root: `LOOPSCOPE_SOCKET_DIR=/tmp/lsdocs python docs/make_top_svg.py`.
"""
import asyncio, os, subprocess, sys, time
from loopscope.demo.tour import start_service, wait_for_agent
from loopscope.tui.app import TopApp
from loopscope.tui.datasource import open_backend

proc = start_service(3000)
try:
    wait_for_agent(proc)
    time.sleep(3)
    async def go():
        app = TopApp(str(proc.pid), backend=open_backend(str(proc.pid)))
        async with app.run_test(size=(140, 34)) as pilot:
            for _ in range(40):
                await pilot.pause(0.1)
                await app.workers.wait_for_complete()
            app.save_screenshot("top.svg", path="docs")
    asyncio.run(go())
finally:
    proc.terminate(); proc.wait()
    try: os.unlink(f"{os.environ['LOOPSCOPE_SOCKET_DIR']}/{proc.pid}.sock")
    except OSError: pass
