"""The chat page at `/` in headless Chromium (Debian package `chromium`), driven over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: no extra Python package): it asks a question,
streams the answer over SSE, renders the [n] markers as links and the numbered sources; a click on
a marker opens and highlights its source; the screenshot is a real rendered page."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from api.app import create_app
from tests.unit.api_helpers import WARRANTY_ANSWER, make_services, running_server

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)")]
QUESTION = "How long is the Acme X200 warranty?"
WAIT_FOR_ANSWER = """new Promise((resolve, reject) => {
  const started = Date.now();
  (function poll() {
    const status = document.querySelector(".msg.assistant .status");
    if (status && / s$/.test(status.textContent)) return resolve(true);
    if (Date.now() - started > 20000) return reject(new Error("no answer: " + document.body.innerText));
    setTimeout(poll, 50);
  })();
})"""
CLICK = """(() => {
  const cite = document.querySelector("a.cite");
  cite.click();
  const cited = document.querySelector(`.source[data-number="${cite.dataset.source}"]`);
  const second = document.querySelector('.source[data-number="2"]');
  const before = second.classList.contains("open");
  second.querySelector(".head").click();
  return {answer: document.querySelector(".msg.assistant .text").textContent, cite: cite.dataset.source,
          citedOpen: cited.classList.contains("open"), citedHighlight: cited.classList.contains("highlight"),
          secondBefore: before, secondAfter: second.classList.contains("open"),
          sources: document.querySelectorAll(".source").length};
})()"""


class Chromium:
    """Headless Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out)."""

    def __init__(self, width: int = 1100, height: int = 760) -> None:
        to_chrome_r, self._out = os.pipe()
        self._in, from_chrome_w = os.pipe()

        def wire() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
                                     preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.width, self.height = width, height
        self._id, self._buffer = 0, b""
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._in], [], [], max(deadline - time.monotonic(), 0))
                if not ready:
                    raise TimeoutError(f"no reply to {method}")
                self._buffer += os.read(self._in, 1 << 20)
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def page(self, method: str, **params) -> dict:
        return self.send(method, session=self.session, **params)

    def open(self, url: str) -> None:
        """Navigate to `url` in a viewport of the window's size (no device scaling)."""
        self.page("Page.enable")
        self.page("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)
        self.page("Page.navigate", url=url)

    def evaluate(self, expression: str) -> object:
        result = self.page("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"].get("exception", {}).get("description"))
        return result["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        os.close(self._in)
        os.close(self._out)


@pytest.fixture
def browser_on_page(tmp_path):
    services = make_services(tmp_path, auth_disabled=True, api_admin_key=None)
    with running_server(create_app(services)) as base:
        browser = Chromium()
        try:
            browser.open(f"{base}/?q={quote(QUESTION)}")
            time.sleep(0.2)
            browser.evaluate(WAIT_FOR_ANSWER)
            yield browser
        finally:
            browser.close()
    services.close()


def test_page_streams_an_answer_with_clickable_sources(browser_on_page):
    state = browser_on_page.evaluate(CLICK)
    assert state["answer"] == WARRANTY_ANSWER and state["cite"] == "1" and state["sources"] == 5
    assert state["citedOpen"] and state["citedHighlight"]
    assert state["secondBefore"] is False and state["secondAfter"] is True


def test_screenshot_shows_the_answer_and_sources(browser_on_page, tmp_path):
    from PIL import Image

    png = base64.b64decode(browser_on_page.page("Page.captureScreenshot", format="png")["data"])
    (Path(os.environ.get("RAG_SCREENSHOT_DIR", tmp_path)) / "chat-page.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1100, 760)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text rendered, not a blank page
    pixels = image.load()
    accent = sum(1 for x in range(0, 1100, 2) for y in range(0, 760, 2)
                 if all(abs(c - a) < 30 for c, a in zip(pixels[x, y], (11, 99, 206))))
    assert accent > 200  # the accent blue: Send button, citation links, source numbers
    bubble = sum(1 for x in range(0, 1100, 4) for y in range(0, 400, 4) if pixels[x, y] == (232, 241, 253))
    assert bubble > 500  # the question's bubble


def test_first_run_without_a_key_says_how_to_make_one(tmp_path):
    """As `rag serve` starts without RAG_API_ADMIN_KEY and no key in the browser: the chat page shows
    the exact command that makes a key (it used to say only "An API key is needed (401)")."""
    from tests.integration.test_console_page import FIRST_RUN, screenshot, wait_for

    services = make_services(tmp_path, api_admin_key=None)
    with running_server(create_app(services)) as base:
        browser = Chromium()
        try:
            browser.open(f"{base}/")
            wait_for(browser, "document.readyState === 'complete'")
            browser.evaluate("localStorage.clear(); location.reload(); true")
            wait_for(browser, "document.readyState === 'complete'")
            help_text = wait_for(browser, FIRST_RUN)
            assert "rag keys create NAME --write '*'" in help_text and "rag-" in help_text, help_text
            assert "(401)" in help_text and "No knowledge base yet" not in browser.evaluate("document.body.innerText")
            screenshot(browser, "firstrun-chat.png", tmp_path)
        finally:
            browser.close()
    services.close()
