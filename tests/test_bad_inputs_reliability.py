"""The bad inputs of the reliability issue, each a one-line error and a non-zero exit (none a traceback,
none a silent accept), and nothing written that was there before."""

import json
import shutil

import numpy as np
import pytest
import torch

from prism_lm.checkpoint import save_model
from prism_lm.cli import main
from prism_lm.data.synthetic import ANNOTATION_KINDS
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
    _damaged_worlds(base)
    return base


def _damaged_worlds(base):
    """The loaders' bad inputs: a saved dataset with a broken state file, annotations with a kind id out
    of range, a manifest without its sha256 entries, imports with a non-integer size or NaN weights."""
    import datasets

    from tests.reference import make_official_checkpoint

    datasets.Dataset.from_dict({"text": ["Once upon a time."] * 4}).save_to_disk(str(base / "ds"))
    (base / "ds" / "state.json").write_text('{"_data_files": [')  # cut mid-write
    for name in ("bad-kind", "no-sha", "no-max-id"):
        shutil.copytree(base / "d", base / name)
    notes = np.load(base / "bad-kind" / "val-annotations.npy")
    notes[0, 2] = 99
    np.save(base / "bad-kind" / "val-annotations.npy", notes)
    manifest = json.loads((base / "no-sha" / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            del shard["sha256"]
    (base / "no-sha" / "manifest.json").write_text(json.dumps(manifest))
    manifest = json.loads((base / "no-max-id" / "manifest.json").read_text())
    del manifest["splits"]["train"]["shards"][0]["max_token_id"]
    (base / "no-max-id" / "manifest.json").write_text(json.dumps(manifest))
    torch.save({"model": {}, "model_args": {"n_layer": "two", "n_head": 2, "n_embd": 32, "block_size": 16,
                                            "vocab_size": 61}}, base / "crate-two.pt")
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=24, bias=False, vocab_size=61, dropout=0.0,
                prism_expansion_ratio=2, prism_freq_multiplier=3.14159, prism_lambda_start=0.01, prism_lambda_end=0.1)
    ckpt = make_official_checkpoint(args)
    ckpt["model"]["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    torch.save(ckpt, base / "official-nan.pt")


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
    "temperature nan": (lambda w: ["sample", str(w / "run"), "--temperature", "nan"],
                        "--temperature: must be a finite number >= 0, got nan"),
    "max new tokens 1e9": (lambda w: ["sample", str(w / "run"), "--max-new-tokens", "1000000000"],
                           "--max-new-tokens: must be an integer in [1, 100,000]"),
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
    "bench train steps 0": (lambda w: _bench("train", "--steps", "0"), "--steps: must be an integer in [1, "),
    "bench train steps -3": (lambda w: _bench("train", "--steps", "-3"), "--steps: must be an integer in [1, "),
    "bench train warmup -1": (lambda w: _bench("train", "--warmup", "-1"), "--warmup: must be an integer in [0, "),
    "bench train batch 0": (lambda w: _bench("train", "--batch-size", "0"), "--batch-size: must be an integer in [1"),
    "bench train loss chunk -5": (lambda w: _bench("train", "--loss-chunk", "-5"),
                                  "--loss-chunk: must be an integer in [0, "),
    "bench decode new tokens 0": (lambda w: _bench("decode", "--new-tokens", "0"),
                                  "--new-tokens: must be an integer in [1, "),
    "bench decode prompt 0": (lambda w: _bench("decode", "--prompt-len", "0"),
                              "--prompt-len: must be an integer in [1, "),
    "bench decode batch 0": (lambda w: _bench("decode", "--batch-size", "0"),
                             "--batch-size: must be an integer in [1, "),
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
    # every number through one finite-float and one bounded-integer type (prism_lm/bounds.py)
    **{f"ablate lambda {v}": (lambda w, v=v: ["ablate", str(w / "run"), f"--lambda={v}"],
                              "--lambda: must be a finite number, got") for v in ("nan", "inf", "-inf", "1e400")},
    **{f"{cmd} eval-time lambda {v}": (lambda w, cmd=cmd, out=out, v=v: [
        cmd, str(w / "run"), *([] if out is None else ["--out", str(w / out)]), *(["--prompt", "Once"] if cmd ==
                                                                                  "sample" else []),
        "--set", f"model.prism.lambda_start={v}"], "--set model.prism.lambda_start must be a finite number, got")
       for cmd, out in (("eval", None), ("sample", None), ("analyze", "rep"), ("explore", "p.html"))
       for v in ("nan", "inf", "-inf")},
    "eval-time lambda by its old name": (lambda w: ["eval", str(w / "run"), "--set", "model.lambda_start=nan"],
                                         "--set model.prism.lambda_start must be a finite number, got nan"),
    "eval context 1e9": (lambda w: ["eval", str(w / "run"), "--context", "1000000000"],
                         "--context: must be an integer in [1, 65,536], got 1,000,000,000"),
    "eval-time block_size 1e9": (lambda w: ["eval", str(w / "run"), "--set", "model.block_size=1000000000"],
                                 "--set model.block_size must be an integer in [1, 65,536]"),
    "sample seed 1e20": (lambda w: ["sample", str(w / "run"), "--seed", str(10**20)],
                         "--seed: must be an integer in [0, 2^63), got 100,000,000,000,000,000,000"),
    "sample seed -1": (lambda w: ["sample", str(w / "run"), "--seed", "-1"], "--seed: must be an integer in [0, 2^63)"),
    "train lr nan": (lambda w: _train(w, w / "r1", **{"optim.lr": "nan"}),
                     "config key 'optim.lr' must be a finite number, got nan"),
    "train seed 2^64": (lambda w: _train(w, w / "r1", **{"run.seed": 2**64}),
                        "config key 'run.seed' must be an integer"),
    # every loader's library exception as one line naming the file; integrity checks that refuse
    "damaged saved dataset": (lambda w: ["data", "prepare", "--source", str(w / "ds"), "--out", str(w / "r1")],
                              "is not a readable saved dataset"),
    **{f"{cmd} annotation kind out of range": (lambda w, argv=argv: argv(w), f"kind id below {len(ANNOTATION_KINDS)}")
       for cmd, argv in (("analyze", lambda w: ["analyze", str(w / "run"), "--data", str(w / "bad-kind"), "--out",
                                                str(w / "rep")]),
                         ("ablate", lambda w: ["ablate", str(w / "run"), "--data", str(w / "bad-kind")]),
                         ("verify", lambda w: ["data", "verify", str(w / "bad-kind")]))},
    "verify without sha256": (lambda w: ["data", "verify", str(w / "no-sha")], "has no sha256"),
    "verify without max_token_id": (lambda w: ["data", "verify", str(w / "no-max-id")], "manifest says None"),
    "import-crate n_layer two": (lambda w: ["import-crate", str(w / "crate-two.pt"), "--out", str(w / "r1")],
                                 "model_args n_layer must be an integer, got 'two'"),
    "import-official NaN weights": (lambda w: ["import-official", str(w / "official-nan.pt"), "--out",
                                               str(w / "r2")], "holds NaN or infinite values"),
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
