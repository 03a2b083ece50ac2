"""Open a page in headless Chromium and report what a reader gets: the visible text, each figure's
size and a screenshot of it, and every request the page made.

Chromium is driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`: commands
on fd 3, replies on fd 4, JSON messages ending in NUL), so nothing beyond the standard library and
the browser is needed. The browser runs in a network namespace of its own (`unshare -n`) where the
machine allows it, so a page that tried to fetch anything could not reach it either way; the
requests it attempted are reported all the same.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
        "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--window-size=1200,900")

FIGURES_JS = """JSON.stringify({
  text: document.body.innerText,
  figures: [...document.querySelectorAll('figure')].map(f => {
    const svg = f.querySelector('svg'), r = svg ? svg.getBoundingClientRect() : null;
    return {id: f.id, width: r ? r.width : 0, height: r ? r.height : 0,
            x: r ? r.left + window.scrollX : 0, y: r ? r.top + window.scrollY : 0,
            shapes: svg ? svg.querySelectorAll('path, rect, line, polyline, use').length : 0};
  }),
})"""


def find() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


def required() -> str:
    """The browser, or skip the test; under `.ci/run` (BRIDGE_TESTS_NEED_CHROMIUM=1) a missing browser
    fails instead, so CI never passes by skipping the page checks."""
    import pytest

    binary = find()
    if binary is None:
        message = "needs Debian's chromium (apt-get install chromium)"
        if os.environ.get("BRIDGE_TESTS_NEED_CHROMIUM"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def offline_prefix() -> list[str]:
    """`unshare -n` (a network namespace with no interfaces) when this machine allows it."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return ["unshare", "-n"] if ok else []


@dataclass
class Loaded:
    text: str
    figures: list[dict]
    requests: list[str]  # every URL the page asked for, itself included
    screenshots: dict[str, bytes] = field(default_factory=dict)  # figure id -> PNG of it
    offline: bool = False  # ran in a network namespace of its own


class _Browser:
    def __init__(self, binary: str, prefix: list[str], profile: str, timeout: float):
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()

        def wire():  # the browser reads commands on fd 3 and writes replies on fd 4
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([*prefix, binary, *ARGS, f"--user-data-dir={profile}", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(cmd_r)
        os.close(res_w)
        self.out, self.inp = cmd_w, res_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []
        self.deadline = time.monotonic() + timeout

    def _receive(self) -> dict:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise EOFError("chromium exited")
            self.buf += chunk
        message, self.buf = self.buf.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive())

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # its own session: the browser and every helper it started
            self.proc.wait(15)
        os.close(self.out)
        os.close(self.inp)


def load(url: str, *, binary: str, timeout: float = 90.0) -> Loaded:
    prefix = offline_prefix()
    with tempfile.TemporaryDirectory(prefix="bridge-chromium-") as profile:
        browser = _Browser(binary, prefix, profile, timeout)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            browser.send("Network.enable", session=session)
            browser.send("Page.enable", session=session)
            browser.send("Page.navigate", {"url": url}, session=session)
            browser.wait_for("Page.loadEventFired")
            found = json.loads(browser.send("Runtime.evaluate", {"expression": FIGURES_JS, "returnByValue": True},
                                            session=session)["result"]["value"])
            shots = {}
            for f in found["figures"]:
                if f["width"] and f["height"]:
                    clip = {"x": f["x"], "y": f["y"], "width": f["width"], "height": f["height"], "scale": 1}
                    shot = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                                   "captureBeyondViewport": True}, session=session)
                    shots[f["id"]] = base64.b64decode(shot["data"])
            requests = [e["params"]["request"]["url"] for e in browser.events
                        if e.get("method") == "Network.requestWillBeSent"]
            return Loaded(found["text"], found["figures"], requests, shots, offline=bool(prefix))
        finally:
            browser.close()
