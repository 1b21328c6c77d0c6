"""TensorBoard and W&B as their users configure them: W&B's names and environment variables, TB's
hyper-parameters and the resolved config, read back with each library's own readers."""

import json
import subprocess
import sys

import pytest

from prism_lm.config import load_train_config, to_dict
from prism_lm.errors import PrismError
from prism_lm.run_dir import RunDir
from prism_lm.train.metrics import wandb_settings
from tests.helpers import cli_env


def test_wandb_settings_come_from_the_config_unless_wandbs_own_variables_are_set(tmp_path):
    cfg = load_train_config("tiny-prism-cpu", ["wandb.project=claims", "wandb.entity=lab", "wandb.group=c3",
                                               'wandb.tags=["tiny", "pi"]'])
    run = RunDir(tmp_path / "run")
    assert wandb_settings(run, to_dict(cfg), environ={}) == {
        "project": "claims", "entity": "lab", "group": "c3", "tags": ["tiny", "pi"], "dir": str(run.path)}
    env = {"WANDB_PROJECT": "p", "WANDB_ENTITY": "e", "WANDB_RUN_GROUP": "g", "WANDB_TAGS": "a,b", "WANDB_DIR": "/x"}
    assert wandb_settings(run, to_dict(cfg), environ=env) == dict.fromkeys(("project", "entity", "group", "tags",
                                                                            "dir"))  # left to W&B
    defaults = wandb_settings(run, to_dict(load_train_config("tiny-prism-cpu")), environ={})
    assert defaults == {"project": "prism-lm", "entity": None, "group": None, "tags": None, "dir": str(run.path)}


def test_logging_keys_change_neither_a_runs_identity_nor_its_resume():
    from prism_lm.config import RESUME_SAFE_KEYS, WANDB_KEYS
    from prism_lm.experiments.spec import identity

    plain, tagged = load_train_config("tiny-prism-cpu"), load_train_config("tiny-prism-cpu", ["wandb.group=x"])
    assert identity(plain, None) == identity(tagged, None)
    assert WANDB_KEYS <= RESUME_SAFE_KEYS
    with pytest.raises(PrismError, match="wandb.tags"):
        load_train_config("tiny-prism-cpu", ['wandb.tags=["a,b"]'])
    assert load_train_config("tiny-prism-cpu", ["wandb.tags=a, b"]).wandb.tags == ["a", "b"]  # a comma list
    with pytest.raises(PrismError, match=r"""must be list, got 1 \(a list: --set 'wandb.tags=\["a", "b"\]' or"""):
        load_train_config("tiny-prism-cpu", ["wandb.tags=1"])
    with pytest.raises(PrismError, match="unknown config key 'wandb.team'"):
        load_train_config("tiny-prism-cpu", ["wandb.team=x"])


def test_wandb_run_takes_its_names_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from prism_lm.train.metrics import _wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP", "WANDB_TAGS", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    cfg = load_train_config("tiny-prism-cpu", ["wandb.project=claims", "wandb.group=c3", 'wandb.tags=["tiny"]',
                                               f"wandb.dir={tmp_path / 'wb'}"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run2").mkdir()
    run = _wandb_run(RunDir(tmp_path / "run"), to_dict(cfg))
    try:
        assert (run.project, run.group, tuple(run.tags)) == ("claims", "c3", ("tiny",))
        assert str(tmp_path / "wb") in run.dir
        assert run.config["wandb"]["group"] == "c3"
    finally:
        run.finish()
    # W&B reads its variables when its process sets up: a fresh process, as a user's would be
    script = ("import json, sys; from prism_lm.config import load_train_config, to_dict; "
              "from prism_lm.run_dir import RunDir; from prism_lm.train.metrics import _wandb_run; "
              "cfg = load_train_config('tiny-prism-cpu', ['wandb.project=claims', 'wandb.group=c3']); "
              "r = _wandb_run(RunDir(sys.argv[1]), to_dict(cfg)); print(json.dumps([r.project, r.group])); r.finish()")
    env = dict(cli_env(), WANDB_MODE="offline", WANDB_SILENT="true", WANDB_RUN_GROUP="from-env",
               WANDB_DIR=str(tmp_path / "wb-env"))
    (tmp_path / "wb-env").mkdir()
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run2")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["claims", "from-env"]
    assert any((tmp_path / "wb-env").rglob("*.wandb"))  # WANDB_DIR won over the run directory


def test_tensorboard_gets_the_config_as_text_and_its_hyper_parameters(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from prism_lm.train.loop import train
    from tests.helpers import prepare_tiny, tiny_train_config

    data = prepare_tiny(tmp_path / "d", stories=20)
    train(tiny_train_config(data, tmp_path / "run", **{"run.max_iters": 2, "run.eval_interval": 2,
                                                       "run.tensorboard": "true"}))
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "[model]" in config_text and 'attention = "prism"' in config_text and "[wandb]" in config_text
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    names = {h.name for h in experiment.hparam_infos}
    assert {"model.attention", "optim.lr", "run.max_iters", "model.prism.lambda_start"} <= names  # sections too
    assert {m.name.tag for m in experiment.metric_infos} == {"eval/val_loss", "iter/train_loss"}
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert values["model.prism.noise_stream"].WhichOneof("kind") == "bool_value"  # a boolean, not 0/1
    assert values["model.prism.noise_stream"].bool_value is True and values["optim.lr"].number_value == 3e-3
    assert events.Scalars("iter/train_loss")
