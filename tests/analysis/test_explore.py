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
from prism_lm.errors import PrismError
from prism_lm.model import PrismLM
from tests.helpers import tiny_model_config

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore") / "ck"
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(vocab_size=50304, block_size=64))
    model.set_scheduled_lambda(0.3)
    save_model(model, path, codec=Codec())
    return path


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    path = tmp_path_factory.mktemp("explore") / "gpt"
    torch.manual_seed(1)
    model = PrismLM(tiny_model_config(attention="gpt", vocab_size=50304, block_size=64, n_layer=3))
    save_model(model, path, codec=Codec())
    return path


def test_page_data_holds_every_layer_head_and_stream(checkpoint):
    data = explorer_data(checkpoint, "The frog found a shiny key. The frog looked for a door.")
    (model,) = data["models"]
    assert data["tokens"][:3] == ["The", " frog", " found"] and model["n_layer"] == 2
    layer = model["layers"][0]
    assert layer["streams"] == ["signal", "noise"] and layer["heads"] == 2 and layer["lambda"] == pytest.approx(0.3)
    T = len(data["tokens"])
    assert len(layer["maps"]) == 4 and len(layer["maps"][0]) == T
    assert all(abs(sum(row) - 1) < 1e-3 for row in layer["maps"][0])
    st = layer["stats"][0]
    assert {"mass_self", "mass_lags_1_8", "mass_beyond_8", "entropy_relative", "sink_first"} <= set(st)
    assert st["mass_self"] + st["mass_lags_1_8"] + st["mass_beyond_8"] == pytest.approx(1.0, abs=1e-5)


def test_output_sizes_are_each_streams_part_of_what_the_layer_adds(checkpoint):
    """The net part is the difference of the two streams' parts: check it against a forward hook by hand."""
    from prism_lm.analysis.explore import _output_norms
    from prism_lm.checkpoint import load_model
    from prism_lm.model.interventions import intervene

    model = load_model(checkpoint).eval()
    ids = torch.tensor([Codec().encode("The frog found a shiny key.")])
    norms = _output_norms(model, ids)[1]
    outs = {}
    hook = model.blocks[1].hook_attn_out.register_forward_hook(lambda m, i, o: outs.__setitem__(len(outs), o[0]))
    with torch.no_grad():
        model(ids)
        with intervene(model, zero_streams=["noise"], layers=[1]):
            model(ids)
        with intervene(model, zero_streams=["signal"], layers=[1]):
            model(ids)
    hook.remove()
    net, signal, noise = outs[0], outs[1], outs[2]
    assert torch.allclose(net, signal + noise, atol=1e-5)  # the layer adds S - λN: the parts sum to it
    assert norms["signal"] == pytest.approx(float(signal.norm(dim=-1).mean()), rel=1e-5)
    assert norms["noise"] == pytest.approx(float(noise.norm(dim=-1).mean()), rel=1e-5)
    assert norms["net"] == pytest.approx(float(net.norm(dim=-1).mean()), rel=1e-5)
    # λ = 0.3 scales the noise part: at λ = 0 it is gone
    with intervene(model, lam=0.0):
        assert _output_norms(model, ids)[1]["noise"] == pytest.approx(0.0, abs=1e-6)


def test_two_models_side_by_side_share_the_tokens_and_keep_their_own_sizes(checkpoint, baseline, tmp_path):
    data = explorer_data([checkpoint, baseline], "The frog found a shiny key.")
    assert [m["attention"] for m in data["models"]] == ["prism", "gpt"]
    assert [m["n_layer"] for m in data["models"]] == [2, 3]
    gpt_layer = data["models"][1]["layers"][0]
    assert gpt_layer["streams"] == ["main"] and gpt_layer["output_norms"] is None  # one stream: no parts
    other = tmp_path / "compact"
    from prism_lm.data.tokenizer import EOT_ID, encode

    token_map = sorted({*encode("The frog found a shiny key."), EOT_ID})
    save_model(PrismLM(tiny_model_config(vocab_size=len(token_map), block_size=64)), other, codec=Codec(token_map))
    with pytest.raises(PrismError, match="tokenizes the text differently"):
        explorer_data([checkpoint, other], "The frog found a shiny key.")


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
def test_page_in_a_real_browser(checkpoint, baseline, tmp_path):
    pytest.importorskip("websocket")
    text = "The frog found a shiny key. The frog looked"
    page = _Page(write_explorer(checkpoint, tmp_path / "page.html", text).resolve().as_uri(), tmp_path / "p1")
    try:
        assert page.errors() == []
        # signal, noise and the net map side by side, each with token labels on its axes
        assert page.js("Array.from(document.querySelectorAll('#maps canvas, #models canvas')).map(c => "
                       "c.dataset.stream)") == ["0", "1", "net"]
        assert page.js("Number(document.querySelector('#models canvas').dataset.labels)") >= 5
        assert "self (lag 0)" in page.js("document.querySelector('.stats').textContent")
        assert "net" in page.js("document.querySelector('.outputs').textContent")
        # a colour scale: the legend's ticks sit where √p puts them, and move for linear p
        sqrt_ticks = page.js("document.getElementById('legend').dataset.ticks")
        assert sqrt_ticks.split(",")[1] == "0.100"  # p = 0.01 at √0.01
        page.js("const c = document.getElementById('scale'); c.value = 'linear'; c.dispatchEvent(new Event('change'))")
        assert page.js("document.getElementById('legend').dataset.ticks").split(",")[1] == "0.010"
        before = page.js("document.getElementById('models').dataset.signature")
        page.js("const s = document.getElementById('head'); s.value = '1'; s.dispatchEvent(new Event('change'))")
        assert page.js("document.getElementById('models').dataset.head") == "1"
        assert page.js("document.getElementById('models').dataset.signature") != before  # another map is drawn
        page.js("const l = document.getElementById('layer'); l.value = '0'; l.dispatchEvent(new Event('change'))")
        assert page.js("document.getElementById('models').dataset.layer") == "0"
        box = page.js("(() => { const s = document.querySelectorAll('#tokens span')[5]; s.scrollIntoView();"
                      " const r = s.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])  # a real hover
        assert page.js("document.getElementById('tokens').dataset.hover") == "5"
        assert page.js("document.querySelectorAll('#tokens span')[5].classList.contains('hovered')")
        red = page.js("(() => { const c = document.querySelector('#models canvas'), T = "
                      "document.querySelectorAll('#tokens span').length, cell = (c.width - 72) / T;"
                      " return Array.from(c.getContext('2d').getImageData(70, Math.round(70 + 5.5 * cell), 1, 1)"
                      ".data); })()")
        assert red[0] > 150 and red[1] < 120, red  # the hovered token's row is outlined in red
        shades = {}
        for option in ("0:0", "0:1", "0:net"):  # the text shaded by the signal, the noise or the net map
            page.js(f"{{ const h = document.getElementById('shade'); h.value = '{option}';"
                    " h.dispatchEvent(new Event('change')); }")
            page.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
            assert page.js("document.getElementById('tokens').dataset.shade") == option
            shades[option] = page.js("Array.from(document.querySelectorAll('#tokens span')).slice(0, 6)"
                                     ".map(s => s.style.background).join('|')")
        assert len(set(shades.values())) == 3, shades
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0] + 300, y=box[1] + 300)
        assert page.errors() == []
    finally:
        page.close()
    # two models on one page: PRISM and a GPT baseline, one row each, hovering one token marks both
    both = write_explorer([checkpoint, baseline], tmp_path / "both.html", text)
    page = _Page(both.resolve().as_uri(), tmp_path / "p2")
    try:
        assert page.errors() == []
        assert page.js("document.querySelectorAll('.model').length") == 2
        assert page.js("Array.from(document.querySelectorAll('#models canvas')).map(c => c.dataset.model + "
                       "c.dataset.stream)") == ["00", "01", "0net", "10"]
        page.js("const l = document.getElementById('layer'); l.value = '2'; l.dispatchEvent(new Event('change'))")
        assert "layer 1" in page.js("document.querySelectorAll('.model h2')[0].textContent")  # PRISM has 2
        assert "layer 2" in page.js("document.querySelectorAll('.model h2')[1].textContent")
        assert page.errors() == []
    finally:
        page.close()
