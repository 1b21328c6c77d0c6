"""The bad inputs of the reliability issue, each a one-line error and a non-zero exit (none a traceback,
none a silent accept), and nothing written that was there before."""

import json
import shutil

import numpy as np
import pytest
import torch

from prism_lm.checkpoint import save_model
from prism_lm.cli import main
from prism_lm.data.tokenizer import Codec
from prism_lm.model import PrismLM
from tests.helpers import tiny_model_config as model_config
from tests.helpers import train_argv, write_experiment


@pytest.fixture(scope="module")
def world(world, tmp_path_factory):
    """A copy of the session's bad-input world with the damaged folders these cases need."""
    base = tmp_path_factory.mktemp("reliability") / "w"
    shutil.copytree(world, base)
    data = base / "d"
    # a data folder whose manifest lost its tokenizer entry, one whose annotations are a pickle,
    # and one whose annotations path leaves the folder
    for name in ("no-tokenizer", "pickled", "escape"):
        shutil.copytree(data, base / name)
    manifest = json.loads((base / "no-tokenizer" / "manifest.json").read_text())
    del manifest["tokenizer"]
    (base / "no-tokenizer" / "manifest.json").write_text(json.dumps(manifest))
    for split in ("train", "val"):
        np.save(base / "pickled" / f"{split}-annotations.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    manifest = json.loads((base / "escape" / "manifest.json").read_text())
    manifest["splits"]["train"]["annotations"]["file"] = "../../../etc/passwd"
    (base / "escape" / "manifest.json").write_text(json.dumps(manifest))
    # a checkpoint with NaN weights, in the data's own vocabulary so that every command reads it
    codec = Codec.from_json(json.loads((data / "manifest.json").read_text())["tokenizer"])
    model = PrismLM(model_config(vocab_size=codec.vocab_size, block_size=16))
    with torch.no_grad():
        model.blocks[0].attn.u_proj.weight[0, 0] = float("nan")
    save_model(model, base / "nan", codec=codec)
    # a sweep folder with one result that lost its keys
    write_experiment(base, steps=4)
    return base


def _train(w, out, **extra):
    return train_argv("tiny-prism-cpu", w / "d", out, **extra)


def _bench(*args):
    sets = ["--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
            "--set", "model.block_size=16", "--set", "model.vocab_size=97"]
    return ["bench", *args[:1], "tiny-prism-cpu", *sets, "--attention", "prism", *args[1:]]


CASES = {
    "inspect without tokenizer": (lambda w: ["data", "inspect", str(w / "no-tokenizer")], "no 'tokenizer' entry"),
    "block_size beyond the data": (lambda w: _train(w, w / "r1", **{"model.block_size": 1_000_000_000}),
                                   "model.block_size = 1,000,000,000 needs windows"),
    "eval_iters beyond the val split": (lambda w: _train(w, w / "r2", **{"run.eval_iters": 10**9}),
                                        "run.eval_iters = 1,000,000,000 reads"),
    "temperature nan": (lambda w: ["sample", str(w / "run"), "--temperature", "nan"], "--temperature must be a finite"),
    "max new tokens 1e9": (lambda w: ["sample", str(w / "run"), "--max-new-tokens", "1000000000"],
                           "--max-new-tokens must be in [1, 100,000]"),
    "prompt longer than the model": (lambda w: ["sample", str(w / "run"), "--prompt",
                                                "Once upon a time" + " there was a little girl." * 10],
                                     "this model reads at most 16"),
    "pickled annotations": (lambda w: ["analyze", str(w / "run"), "--data", str(w / "pickled"), "--out",
                                       str(w / "rep")], "is not a plain int64 array"),
    "annotations outside the folder": (lambda w: ["data", "verify", str(w / "escape")], "names a shard outside it"),
    "analyze empty probe": (lambda w: ["analyze", str(w / "run"), "--out", str(w / "rep"), "--probe", ""],
                            "--probe is empty"),
    "analyze target without probe": (lambda w: ["analyze", str(w / "run"), "--out", str(w / "rep"), "--target",
                                                "elephant"], "--target names a word of --probe"),
    "explore empty text": (lambda w: ["explore", str(w / "run"), "--out", str(w / "p.html"), "--text", ""],
                           "--text is empty"),
    "bench train steps 0": (lambda w: _bench("train", "--steps", "0"), "--steps must be >= 1"),
    "bench train steps -3": (lambda w: _bench("train", "--steps", "-3"), "--steps must be >= 1"),
    "bench train warmup -1": (lambda w: _bench("train", "--warmup", "-1"), "--warmup must be >= 0"),
    "bench train batch 0": (lambda w: _bench("train", "--batch-size", "0"), "--batch-size must be >= 1"),
    "bench train loss chunk -5": (lambda w: _bench("train", "--loss-chunk", "-5"), "--loss-chunk must be >= 0"),
    "bench decode new tokens 0": (lambda w: _bench("decode", "--new-tokens", "0"), "--new-tokens must be >= 1"),
    "bench decode prompt 0": (lambda w: _bench("decode", "--prompt-len", "0"), "--prompt-len must be >= 1"),
    "bench decode batch 0": (lambda w: _bench("decode", "--batch-size", "0"), "--batch-size must be >= 1"),
    "sweep into a file": (lambda w: ["sweep", "run", str(w / "two.toml"), "--out", str(w / "a-file")],
                          "exists and is a file"),
    "slurm off a cluster": (lambda w: ["sweep", "run", str(w / "two.toml"), "--out", str(w / "s1"), "--executor",
                                       "slurm"], "no Slurm here"),
    "demo into a file": (lambda w: ["demo", "--out", str(w / "a-file")], "exists and is a file"),
    "sample NaN weights": (lambda w: ["sample", str(w / "nan"), "--prompt", "Once"], "holds NaN or infinite values"),
    "eval NaN weights": (lambda w: ["eval", str(w / "nan"), "--data", str(w / "d")], "holds NaN or infinite values"),
    "explore NaN weights": (lambda w: ["explore", str(w / "nan"), "--out", str(w / "p.html")],
                            "holds NaN or infinite values"),
    "analyze NaN weights": (lambda w: ["analyze", str(w / "nan"), "--data", str(w / "d"), "--out", str(w / "rep")],
                            "holds NaN or infinite values"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_nonzero(world, capsys, name):
    argv, message = CASES[name]
    if name == "slurm off a cluster" and shutil.which("sbatch"):
        pytest.skip("this machine has Slurm")
    assert main(argv(world)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith("error: ") and message in last, err
    assert not any(line.startswith(("Traceback", "  File")) for line in err.splitlines()), err
    for left in ("rep", "p.html", "r1", "r2", "s1"):  # nothing that blocks the corrected command
        path = world / left
        assert not path.exists() or (path.is_dir() and not [p for p in path.rglob("*") if p.is_file()]), left
    assert (world / "a-file").read_text() == "not a directory"


@pytest.mark.slow  # a sweep of four runs, run three times (about 14 s); CI runs it
def test_a_damaged_result_is_evaluated_again_and_a_report_never_overwrites_a_folder(world, tmp_path, capsys):
    from prism_lm.experiments.runner import run_sweep

    out = tmp_path / "sweep"
    assert run_sweep(world / "two.toml", out, log=lambda line: None) == 0
    damaged = next((out / "runs").iterdir()) / "result.json"
    record = json.loads(damaged.read_text())
    del record["row"]
    damaged.write_text(json.dumps(record))
    lines = []
    assert run_sweep(world / "two.toml", out, log=lines.append) == 0
    assert "lacks 'row'; evaluating the run again" in capsys.readouterr().err
    assert "row" in json.loads(damaged.read_text()) and any("1 to run" in line for line in lines)
    damaged.write_text('{"format": "prism-lm sweep res')  # truncated mid-write
    assert run_sweep(world / "two.toml", out, log=lambda line: None) == 0
    assert "row" in json.loads(damaged.read_text())
    target = tmp_path / "mine"
    target.mkdir()
    (target / "report.md").write_text("my notes")
    assert main(["sweep", "report", str(out), "--out", str(target)]) == 2
    assert "already holds files" in capsys.readouterr().err and (target / "report.md").read_text() == "my notes"
    assert main(["sweep", "report", str(out), "--out", str(target), "--overwrite"]) == 0


def test_evaluation_contexts_are_checked_when_the_file_loads(tmp_path):
    from prism_lm.errors import PrismError
    from prism_lm.experiments.spec import load_experiments

    path = write_experiment(tmp_path)
    path.write_text(path.read_text().replace("contexts = [16, 32]", "contexts = [16, 1000000000]"))
    with pytest.raises(PrismError, match="evaluate.contexts 1,000,000,000 exceeds what arm 'prism' can read"):
        load_experiments(path)


def test_an_os_error_is_one_line_naming_the_path(world, tmp_path, capsys, monkeypatch):
    """The entry point's backstop: a full disk or a permission error anywhere is one line, not a traceback."""
    import errno

    from prism_lm.data import shards

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(world / "d" / "manifest.json"))

    monkeypatch.setattr(shards, "inspect", full)
    assert main(["data", "inspect", str(world / "d")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: No space left on device ({world / 'd' / 'manifest.json'})\n"


@pytest.mark.parametrize("command", ["eval", "sample", "explore", "ablate"])
def test_a_damaged_checkpoint_is_refused_on_load(world, tmp_path, capsys, command):
    """Every command that reads weights checks a training checkpoint's recorded sizes and sha256 first."""
    from prism_lm.run_dir import RunDir

    damaged = tmp_path / "step"
    shutil.copytree(RunDir(world / "run").newest(), damaged)
    weights = damaged / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: the same size, another sha256
    weights.write_bytes(bytes(data))
    extra = {"eval": ["--data", str(world / "d")], "sample": ["--prompt", "Once"],
             "explore": ["--out", str(tmp_path / "p.html")], "ablate": ["--data", str(world / "d")]}[command]
    assert main([command, str(damaged), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fails verification: model.safetensors does not match the sha256" in err, err
    assert not (tmp_path / "p.html").exists()
