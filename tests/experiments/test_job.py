"""One sweep job on its own: the folder layout, and evaluation on the run's own device."""

import pytest
import torch

from prism_lm.data.prepare import prepare
from prism_lm.experiments.job import EvaluateSpec, run_job
from prism_lm.experiments.runner import _tasks, _write_job, plan
from prism_lm.experiments.spec import load_experiments
from prism_lm.experiments.sweep_dir import SweepDir
from tests.helpers import write_experiment


def _one_job(tmp_path, device: str):
    """A planned, written job for the first run of the two-arm file, on ``device``, with data."""
    experiments = load_experiments(write_experiment(tmp_path, steps=4))
    experiments[0].runs = experiments[0].runs[:1]
    (run,) = experiments[0].runs
    prepare(["embedded:150"], tmp_path / "data", val_fraction=0.1, compact_vocab=True, progress=False)
    run.config.data.dir = str(tmp_path / "data")
    run.config.run.device = device
    sweep = SweepDir(tmp_path / "sweep")
    (task,) = _tasks(experiments, plan(experiments), sweep)
    _write_job(task)
    return sweep, task


def test_the_sweep_folder_layout_is_sweep_dirs(tmp_path):
    sweep = SweepDir(tmp_path)
    run = sweep.run("prism-s0-abc")
    assert sweep.plan_path == tmp_path / "sweep.json" and sweep.report_dir == tmp_path / "report"
    assert run.job_path == tmp_path / "runs" / "prism-s0-abc" / "job.json"
    assert run.train_run().path == run.train_dir == run.path / "train"
    assert run.heads_path("heads_init") == run.path / "heads_init.json" and run.read_result() is None
    assert sweep.data_dir("embedded:6000") == (tmp_path / "data" / "embedded-6000").resolve()


def test_evaluate_spec_stays_typed_and_shared_runs_take_the_union():
    a, b = EvaluateSpec([64], 8, False), EvaluateSpec([128, 64], 32, True)
    assert a.union(b) == EvaluateSpec([64, 128], 32, True)


def test_the_job_evaluates_and_analyses_on_the_runs_device(tmp_path, monkeypatch):
    """Whatever run.device says reaches the checkpoint loads, the split evaluation and the head
    statistics (here "cpu", spelled out, recorded as each is called)."""
    sweep, task = _one_job(tmp_path, "cpu")
    seen = {"load": [], "evaluate": [], "heads": []}
    from prism_lm import checkpoint, evaluate
    from prism_lm.analysis import heads

    real_load, real_eval, real_heads = checkpoint.load_model, evaluate.evaluate_split, heads.head_statistics

    def load(path, device="cpu"):
        seen["load"].append(torch.device(device))
        return real_load(path, device=device)

    def evaluate_split(model, shards, context, batch_size=8, device="cpu", **kw):
        seen["evaluate"].append(torch.device(device))
        return real_eval(model, shards, context, batch_size=batch_size, device=device, **kw)

    def head_statistics(model, shards, **kw):
        seen["heads"].append(next(model.parameters()).device)
        return real_heads(model, shards, **kw)

    monkeypatch.setattr(checkpoint, "load_model", load)
    monkeypatch.setattr(evaluate, "evaluate_split", evaluate_split)
    monkeypatch.setattr(heads, "head_statistics", head_statistics)
    resolved = []
    from prism_lm import devices

    real = devices.resolve_device
    monkeypatch.setattr(devices, "resolve_device", lambda name, *a: resolved.append(name) or real(name, *a))
    assert run_job(task.path) == "done"
    assert "cpu" in resolved
    assert seen["load"] and all(d == torch.device("cpu") for d in seen["load"])
    assert len(seen["evaluate"]) >= 2 and all(d == torch.device("cpu") for d in seen["evaluate"])
    assert len(seen["heads"]) == 2  # trained and its step 0, both on the run's device
    result = sweep.run(task.folder.name).read_result()
    assert result["evaluate"] == {"contexts": [16, 32], "head_windows": 4, "initial": True, "head_ablations": False,
                                  "long_contexts": []}
    # every column the row has was declared (so verdicts on it load), the per-distance recall deltas too
    declared = EvaluateSpec(**result["evaluate"]).columns(task.run.config)
    assert set(result["row"]) - {"experiment", "arm", "group", "seed", "identity", "run_dir"} <= declared
    assert {"noise_off_recall_delta_d17_64", "signal_off_recall_delta_dgt64"} <= set(result["row"])


@pytest.mark.slow  # one 4-step job on a synthetic task (about 8 s)
def test_a_job_trained_on_answers_reports_its_answer_loss(tmp_path):
    """A run with data.loss_on = "answers" gets answer_loss_CTX, the val loss on the answers it trained
    on (what tuning can choose on), equal to evaluate_split(answers=True) of its final checkpoint."""
    from prism_lm import load_model
    from prism_lm.data.shards import ShardSet
    from prism_lm.evaluate import evaluate_split

    experiments = load_experiments(write_experiment(tmp_path, steps=4))
    experiments[0].runs = experiments[0].runs[:1]
    (run,) = experiments[0].runs
    prepare(["synthetic:mqar:300:pairs=4,queries=2,vocab=8"], tmp_path / "data", val_fraction=0.1,
            compact_vocab=True, progress=False)
    run.config.data.dir, run.config.data.sampler, run.config.data.loss_on = str(tmp_path / "data"), "bos", "answers"
    run.config.model.block_size = 16
    experiments[0].evaluate.contexts = [16]
    sweep = SweepDir(tmp_path / "sweep")
    (task,) = _tasks(experiments, plan(experiments), sweep)
    _write_job(task)
    assert run_job(task.path) == "done"
    row = sweep.run(task.folder.name).read_result()["row"]
    assert row["best_val_loss_16"] == row["val_loss_16"]  # val fell: best is the final checkpoint
    final = load_model(task.folder.train_dir)
    expected = evaluate_split(final, ShardSet(tmp_path / "data", "val"), 16, batch_size=16, bos=True, answers=True)
    assert row["answer_loss_16"] == pytest.approx(expected["loss"]) and row["answer_loss_16"] != row["val_loss_16"]
    every_token = evaluate_split(final, ShardSet(tmp_path / "data", "val"), 16, batch_size=16, bos=True)
    assert row["val_loss_16"] == pytest.approx(every_token["loss"], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_tiny_job_runs_and_evaluates_on_cuda(tmp_path, monkeypatch):
    sweep, task = _one_job(tmp_path, "cuda")
    from prism_lm.analysis import heads

    devices = []
    real = heads.head_statistics
    monkeypatch.setattr(heads, "head_statistics",
                        lambda model, shards, **kw: devices.append(next(model.parameters()).device.type)
                        or real(model, shards, **kw))
    assert run_job(task.path) == "done"
    assert devices == ["cuda", "cuda"]
    assert sweep.run(task.folder.name).read_result()["row"]["val_loss_32"] > 0


def test_the_sweep_columns_name_every_head_statistic():
    """Every per-head metric and every stream comparison of analysis.heads has its sweep column name."""
    from prism_lm.analysis.heads import METRICS, head_statistics  # noqa: F401
    from prism_lm.experiments.job import HEAD_METRICS, STREAM_DIFF_METRICS

    assert set(METRICS) | {"mass_beyond_far", "antecedent_hit_rate", "selectivity"} == set(STREAM_DIFF_METRICS)
    assert {"mass_self", "mass_lags_1_8", "mass_beyond_8", "entropy_relative", "sink_first", "sink_first4",
            "selectivity"} <= set(HEAD_METRICS)


def test_long_context_columns_exist_only_for_models_without_wpe_and_bad_multiples_are_refused():
    from prism_lm.config import load_train_config
    from prism_lm.errors import PrismError
    from prism_lm.experiments.job import EvaluateSpec

    spec = EvaluateSpec(contexts=[64], head_windows=0, long_contexts=[2, 4])
    learned = load_train_config("tiny-prism-cpu", [])
    none = load_train_config("tiny-prism-cpu", ["model.position_embedding=none"])
    assert not any(c.startswith("long_") for c in spec.columns(learned))
    assert {"long_4x_excess", "long_4x_sink_first4", "long_2x_bucket1", "long_4x_bucket3"} <= spec.columns(none)
    assert spec.union(EvaluateSpec(long_contexts=[8])).long_contexts == [2, 4, 8]
    for bad in ([0], [65]):
        with pytest.raises(PrismError, match="long_contexts"):
            EvaluateSpec(long_contexts=bad).validate()
    with pytest.raises(PrismError, match="head_ablations"):
        EvaluateSpec(head_windows=0, head_ablations=True).validate()
