"""`prism explore`: the page's data, and the page itself in a real headless Chromium (skipped without one)."""

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
import torch

from prism_lm.analysis.explore import explorer_data, write_explorer
from prism_lm.checkpoint import save_model
from prism_lm.cli import main
from prism_lm.data.tokenizer import Codec
from prism_lm.model import PrismLM
from tests.conftest import tiny_config

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore") / "ck"
    torch.manual_seed(0)
    save_model(PrismLM(tiny_config(vocab_size=50304, block_size=64)), path, codec=Codec())
    return path


def test_page_data_holds_every_layer_head_and_stream(checkpoint):
    data = explorer_data(checkpoint, "The frog found a shiny key. The frog looked for a door.")
    assert data["tokens"][:3] == ["The", " frog", " found"] and data["n_layer"] == 2
    layer = data["layers"][0]
    assert layer["streams"] == ["signal", "noise"] and layer["heads"] == 2 and layer["lambda"] == pytest.approx(0.01)
    T = len(data["tokens"])
    assert len(layer["maps"]) == 4 and len(layer["maps"][0]) == T
    assert all(abs(sum(row) - 1) < 1e-3 for row in layer["maps"][0])
    assert set(layer["stats"][0]) == {"mean_distance", "entropy", "mass_within_8"}


def test_cli_writes_one_file_and_never_overwrites(checkpoint, tmp_path, capsys):
    assert main(["explore", str(checkpoint), "--out", str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert "<script id=\"data\" type=\"application/json\">" in page
    assert "src=" not in page and "href=" not in page  # nothing loaded from elsewhere: opens from disk
    assert main(["explore", str(checkpoint), "--out", str(tmp_path / "page.html")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["explore", str(checkpoint), "--text", "x " * 100, "--out", str(tmp_path / "long.html")]) == 2


class _Page:
    """A page in headless Chromium driven through the DevTools protocol (real events, real rendering)."""

    def __init__(self, url: str, profile):
        import websocket

        port = self._free_port()
        args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}", "about:blank"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        targets = self._wait(lambda: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list")))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id, self.events = 0, []
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method)
        self.call("Page.navigate", url=url)
        self._wait(lambda: any(e["method"] == "Page.loadEventFired" for e in self.events) or None, pump=True)

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _wait(self, probe, pump=False, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if pump:
                    self.call("Runtime.evaluate", expression="1")
                result = probe()
                if result:
                    return result
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("the browser did not answer in time")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
            self.events.append(message)

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def errors(self):
        return [e for e in self.events if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.skipif(BROWSER is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_page_in_a_real_browser(checkpoint, tmp_path):
    pytest.importorskip("websocket")
    page_path = write_explorer(checkpoint, tmp_path / "page.html", "The frog found a shiny key. The frog looked")
    page = _Page(page_path.resolve().as_uri(), tmp_path / "profile")
    try:
        assert page.errors() == []
        assert page.js("document.querySelectorAll('#maps canvas').length") == 2  # signal and noise side by side
        before = page.js("document.getElementById('maps').dataset.signature")
        page.js("const s = document.getElementById('head'); s.value = '1'; s.dispatchEvent(new Event('change'))")
        assert page.js("document.getElementById('maps').dataset.head") == "1"
        assert page.js("document.getElementById('maps').dataset.signature") != before  # another map is drawn
        page.js("const l = document.getElementById('layer'); l.value = '0'; l.dispatchEvent(new Event('change'))")
        assert page.js("document.getElementById('maps').dataset.layer") == "0"
        box = page.js("(() => { const r = document.querySelectorAll('#tokens span')[5].getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])  # a real hover
        assert page.js("document.getElementById('tokens').dataset.hover") == "5"
        assert page.js("document.querySelectorAll('#tokens span')[5].classList.contains('hovered')")
        red = page.js("(() => { const c = document.querySelector('#maps canvas'), cell = c.width / "
                      "document.querySelectorAll('#tokens span').length;"
                      " return Array.from(c.getContext('2d').getImageData(1, Math.round(5 * cell), 1, 1).data); })()")
        assert red[0] > 150 and red[1] < 120, red  # the hovered token's row is outlined in red
        assert page.errors() == []
    finally:
        page.close()
