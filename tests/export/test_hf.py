"""`prism export hf`: the folder loads offline with transformers alone and computes what prism-lm computes."""

import pytest
import torch

from prism_lm.checkpoint import import_official, load_model, save_model
from prism_lm.cli import main
from prism_lm.data.tokenizer import EOT_ID, Codec, encode
from prism_lm.model import PrismLM, generate
from prism_lm.sampling import sample
from tests.helpers import ALL_KINDS, tiny_model_config
from tests.reference import make_official_checkpoint

transformers = pytest.importorskip("transformers")
PROMPT = "Once upon a time, there was a frog"


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))  # module cache, not ~/.cache


def _trained_ish(kind: str) -> PrismLM:
    """A GPT-2-vocabulary model with embeddings large enough that its logits depend on the context."""
    torch.manual_seed(0)
    model = PrismLM(tiny_model_config(kind, vocab_size=50304, block_size=48))
    with torch.no_grad():
        model.wte.weight.normal_(0, 1.0)
    return model.eval()


def _export(model, tmp_path, name="ck"):
    save_model(model, tmp_path / name, codec=Codec())
    assert main(["export", "hf", str(tmp_path / name), "--out", str(tmp_path / f"hf-{name}")]) == 0
    return tmp_path / name, tmp_path / f"hf-{name}"


def _on_a_terminal(code: str, timeout: float = 60.0) -> tuple[str, int | None]:
    """Run ``python -c code`` with a pseudo-terminal as stdin, stdout and stderr; what it printed and its
    status (None: it was still waiting, for an answer, when stopped)."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    os.close(slave)
    out, deadline = b"", time.time() + timeout
    while time.time() < deadline and b"[y/N]" not in out:
        if select.select([master], [], [], 0.2)[0]:
            try:
                out += os.read(master, 4096)
            except OSError:  # the child closed the terminal: it is done
                break
        elif proc.poll() is not None:
            break
    try:  # asked: waiting for an answer; else let it finish
        status = None if b"[y/N]" in out else proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        status = None
    proc.kill()
    proc.wait()
    os.close(master)
    return out.decode(errors="replace"), status


def _check_parity(ckpt, folder, new_tokens=12):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = load_model(ckpt)
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    assert ids[0].tolist() == encode(PROMPT)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-5)
    expected = generate(ours, ids, new_tokens, temperature=0)
    text = sample(ckpt, PROMPT, new_tokens, temperature=0)[0]  # prism sample --temperature 0
    for use_cache in (True, False):
        out = hf.generate(ids, max_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                          output_scores=True, return_dict_in_generate=True)
        assert torch.equal(out.sequences, expected), use_cache
        for step, scores in enumerate(out.scores):  # every step's logits, not only the argmax
            with torch.no_grad():
                reference = ours(out.sequences[:, : ids.size(1) + step]).logits[:, -1]
            torch.testing.assert_close(scores, reference, atol=1e-4, rtol=1e-4)
        decoded = tokenizer.decode(out.sequences[0])
        assert decoded.split("<|endoftext|>")[0] == text


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_export_matches_prism_lm_for_every_kind(tmp_path, kind):
    ckpt, folder = _export(_trained_ish(kind), tmp_path)
    _check_parity(ckpt, folder)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "modeling_prism.py", "vocab.json",
            "merges.txt", "tokenizer_config.json", "prism_transformer.py"} <= names


def test_export_of_an_imported_official_checkpoint(tmp_path):
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=48, bias=False, vocab_size=50304, dropout=0.0,
                prism_expansion_ratio=2, prism_freq_multiplier=3.14159, prism_lambda_start=0.01,
                prism_lambda_end=0.1)
    official = make_official_checkpoint(args)
    official["model"]["transformer.wte.weight"].normal_(0, 1.0)
    torch.save(official, tmp_path / "ckpt.pt")
    import_official(tmp_path / "ckpt.pt", tmp_path / "imported")
    assert main(["export", "hf", str(tmp_path / "imported"), "--out", str(tmp_path / "hf")]) == 0
    _check_parity(tmp_path / "imported", tmp_path / "hf")


def test_the_export_says_on_the_terminal_that_loading_it_runs_its_code(tmp_path, capsys):
    save_model(PrismLM(tiny_model_config(vocab_size=50304)), tmp_path / "ck", codec=Codec())
    assert main(["export", "hf", str(tmp_path / "ck"), "--out", str(tmp_path / "hf")]) == 0
    err = capsys.readouterr().err
    assert "warning: loading" in err and "trust_remote_code=True runs its Python files" in err


def test_exported_code_needs_no_prism_lm(tmp_path):
    _, folder = _export(_trained_ish("prism"), tmp_path)
    for path in folder.glob("*.py"):
        source = path.read_text()
        assert "import prism_lm" not in source and "from prism_lm" not in source, path.name


def test_compact_vocabulary_and_bad_targets_are_one_line_errors(tmp_path, capsys):
    save_model(PrismLM(tiny_model_config(vocab_size=4)), tmp_path / "compact", codec=Codec([11, 13, 17, EOT_ID]))
    assert main(["export", "hf", str(tmp_path / "compact"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "uses a compact vocabulary" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    _, folder = _export(_trained_ish("gpt"), tmp_path)
    assert main(["export", "hf", str(tmp_path / "ck"), "--out", str(folder)]) == 2  # never over an existing export
    assert "refusing to overwrite" in capsys.readouterr().err


def test_export_returns_real_attentions_and_hidden_states_loads_its_tokenizer_unprompted_and_has_a_card(tmp_path):

    from transformers import AutoModelForCausalLM

    from prism_lm.analysis import capture_attention, hook_name

    torch.manual_seed(0)
    ckpt, folder = _export(PrismLM(tiny_model_config(vocab_size=50304, n_layer=2)), tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ours = load_model(ckpt)
    ids = torch.tensor([encode(PROMPT)])
    with torch.no_grad():
        out = hf(ids, output_attentions=True, output_hidden_states=True, use_cache=False)
    maps = capture_attention(ours, ids)
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    assert hf.config.attention_maps == ["signal.0", "signal.1", "noise.0", "noise.1"]  # each map named by stream
    assert out.attentions[0].shape[1] == len(hf.config.attention_maps) == 2 * hf.config.num_attention_heads
    for layer in range(2):
        torch.testing.assert_close(out.attentions[layer].float(), maps[hook_name(layer)], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.lm_head(out.hidden_states[-1]), out.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden_states[0], ours.wte(ids) + ours.wpe.weight[: ids.size(1)])
    plain = hf(ids, use_cache=False)
    assert plain.attentions is None and plain.hidden_states is None
    # the tokenizer as the docs load it, on a terminal (a pseudo-terminal: where transformers would ask)
    output, status = _on_a_terminal(f"from transformers import AutoTokenizer; print('ids', AutoTokenizer."
                                    f"from_pretrained({str(folder)!r}, trust_remote_code=True).encode('Hi'))")
    assert status == 0 and "[y/N]" not in output and "ids [17250]" in output, output
    # the check can see a prompt: without trust_remote_code transformers asks on a terminal, as docs/export.md says
    output, status = _on_a_terminal(f"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained("
                                    f"{str(folder)!r})")
    assert "[y/N]" in output and status is None, output
    import json as _json

    assert "max_length" not in _json.loads((folder / "generation_config.json").read_text())
    card = (folder / "README.md").read_text()
    assert "trust_remote_code=True` runs the Python files" in card and "parameters" in card


@pytest.mark.slow
def test_the_shipped_lm_eval_task_runs_on_an_export_from_any_directory(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("lm_eval")
    _, folder = _export(PrismLM(tiny_model_config(vocab_size=50304, n_layer=1)), tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tasks = Path(__file__).resolve().parents[2] / "benchmarks" / "lm_eval"
    done = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={folder},trust_remote_code=True", "--tasks", "prism_recall", "--include_path",
                           str(tasks), "--device", "cpu", "--batch_size", "1", "--limit", "4"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prism_recall" in done.stdout and "acc" in done.stdout


@pytest.mark.parametrize("kind", ["prism", *(pytest.param(k, marks=pytest.mark.slow) for k in ("gpt", "diff"))])
def test_a_padded_batch_computes_what_each_row_computes_alone(tmp_path, kind):
    """Left- and right-padded batches with an attention mask: at every real position the logits equal
    the row's own unpadded run (positions come from the mask), and greedy generation from a
    left-padded batch continues each prompt as it continues alone."""
    from transformers import AutoModelForCausalLM

    _, folder = _export(_trained_ish(kind), tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    rows = [encode(PROMPT), encode("A frog")]
    pad = EOT_ID
    width = max(map(len, rows))
    with torch.no_grad():
        alone = [hf(torch.tensor([r])).logits[0] for r in rows]
        for side in ("left", "right"):
            ids = torch.tensor([([pad] * (width - len(r)) + r) if side == "left" else (r + [pad] * (width - len(r)))
                                for r in rows])
            mask = (torch.arange(width)[None, :] >= torch.tensor([[width - len(r)] for r in rows])) if side == "left" \
                else (torch.arange(width)[None, :] < torch.tensor([[len(r)] for r in rows]))
            logits = hf(ids, attention_mask=mask.long()).logits
            assert torch.isfinite(logits).all()
            for i in range(len(rows)):
                torch.testing.assert_close(logits[i][mask[i]], alone[i], atol=1e-4, rtol=1e-4)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = (ids != pad) | (torch.arange(width)[None, :] >= width - torch.tensor([[len(r)] for r in rows]))
        out = hf.generate(ids, attention_mask=mask.long(), max_new_tokens=6, do_sample=False, pad_token_id=pad)
    for i, r in enumerate(rows):
        expected = hf.generate(torch.tensor([r]), max_new_tokens=6, do_sample=False, pad_token_id=pad)[0]
        assert out[i, width:].tolist() == expected[len(r):].tolist()
