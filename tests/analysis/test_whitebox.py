"""The white-box family through the researcher's whole path: a fully white-box PRISM (prism +
ista) and CRATE's LM (crate + ista) train, resume exactly, and go through the analysis report
(with the ISTA codes' sparsity) and the explorer like the other kinds. Export and KV-cache
decoding run for them in the per-kind tests (``tests.helpers.WHITE_BOX``)."""

import json
import shutil

import pytest

from prism_lm.analysis.report import analyze_run
from prism_lm.analysis.sparsity import ista_sparsity
from prism_lm.checkpoint import load_model
from prism_lm.config import flatten
from prism_lm.data.shards import ShardSet
from prism_lm.model import PrismLM
from prism_lm.train.loop import train
from tests.helpers import WHITE_BOX, records_without_timing, tiny_model_config, tiny_train_config


def _config(data, out, kind):
    model = {k: (f'"{v}"' if isinstance(v, str) else str(v).lower())
             for k, v in flatten({"model": WHITE_BOX[kind]}).items()}  # --set model.ista.mode="residual", ...
    return tiny_train_config(data, out, **{"run.max_iters": 12, "run.checkpoint_interval": 6, "run.eval_interval": 6,
                                           "model.block_size": 64, **model})


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "prism+ista" else k
                                  for k in WHITE_BOX])  # CRATE by default: the kind ISTA was written for
def test_trains_resumes_exactly_and_is_analysed(data, tmp_path, kind):
    full = tmp_path / "full"
    train(_config(data, full, kind))
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step-000012")
    shutil.rmtree(cut / "checkpoints" / "best")
    summary = train(_config(data, cut, kind), resume="auto")  # from step 6
    assert summary["step"] == 12
    assert records_without_timing(cut) == records_without_timing(full)  # every record, bit for bit
    model = load_model(cut)
    assert (model.config.attention, model.config.mlp) == (WHITE_BOX[kind]["attention"], "ista")

    paths = analyze_run(cut, data, tmp_path / "report", max_windows=4)
    report = json.loads(paths["json"].read_text())
    sparsity = report["sparsity"]
    assert sparsity["trained"]["layers"] == [0, 1] and 0 < sparsity["trained"]["mean"] < 1
    assert sparsity["initial"]["tokens"] == sparsity["trained"]["tokens"] == 4 * 64
    assert any(row["what"].startswith("ISTA codes") for row in report["summary"])
    md = paths["md"].read_text()
    assert "Sparsity of the ISTA codes" in md
    assert (tmp_path / "report" / report["explorer"]).is_file()
    from prism_lm.analysis.explore import explorer_data

    (page,) = explorer_data(cut, " The frog found a shiny key.")["models"]
    streams = ["signal", "noise"] if kind == "prism+ista" else ["main"]
    assert page["n_layer"] == 2 and page["layers"][0]["streams"] == streams
    assert all(abs(sum(row) - 1) < 1e-3 for row in page["layers"][1]["maps"][0])


def test_sparsity_is_the_fraction_of_zeros_and_absent_without_ista(data):
    import torch

    shards = ShardSet(data, "val")
    model = PrismLM(tiny_model_config("prism+ista", block_size=64, vocab_size=shards.vocab_size)).eval()
    seen = []
    handles = [b.mlp.hook_code.register_forward_hook(lambda m, a, out: seen.append(out)) for b in model.blocks]
    out = ista_sparsity(model, shards, windows=2)
    for h in handles:
        h.remove()
    per_layer = [float(torch.cat([s for s in seen[i::2]]).eq(0).float().mean()) for i in range(2)]
    assert out["per_layer"] == pytest.approx(per_layer) and out["mean"] == pytest.approx(sum(per_layer) / 2)
    gelu = PrismLM(tiny_model_config("prism", block_size=64, vocab_size=shards.vocab_size))
    assert ista_sparsity(gelu, shards) is None
