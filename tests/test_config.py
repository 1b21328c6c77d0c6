"""Config loading: TOML, --set overrides, strict keys and types."""

import pytest

from prism_lm.config import TrainConfig, apply_overrides, dump_toml, load_train_config
from prism_lm.errors import PrismError


def test_defaults_are_the_paper_recipe():
    cfg = load_train_config(None)
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.block_size) == (8, 8, 512, 512)
    assert (cfg.run.batch_size, cfg.run.grad_accum, cfg.run.max_iters) == (32, 2, 20000)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_iters) == (6e-4, 6e-5, 1000)


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nn_layer = 2\n[model.prism]\nfreq_multiplier = "phi"\n[optim]\nlr = 1\n')
    cfg = load_train_config(path, ["model.n_head=4", "optim.min_lr=0.5", "model.prism.freq_multiplier=3/2",
                                   "run.out_dir=runs/x", "model.prism.noise_stream=false"])
    assert cfg.model.n_layer == 2 and cfg.model.n_head == 4
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.prism.freq_multiplier == "3/2" and cfg.model.prism.noise_stream is False
    assert cfg.run.out_dir == "runs/x"


def test_round_trip_through_toml(tmp_path):
    cfg = load_train_config(None, ["model.prism.freq_multiplier=2.5", 'run.out_dir="a \\"b\\""'])
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_train_config(path) == cfg


@pytest.mark.parametrize("override,message", [
    ("model.n_heads=4", "unknown config key 'model.n_heads'"),
    ("modle.n_head=4", "unknown config key 'modle'"),
    ("model.n_head=four", "must be int"),
    ("model.n_head=4.0", "must be int"),
    ("model.dropout=true", "must be float"),
    ("model.attention=mamba", "model.attention must be one of"),
    ("model.prism.freq_multiplier=tau", "freq_multiplier 'tau'"),
    ("model.n_head=3", "divisible"),
    ("optim.min_lr=1.0", "min_lr"),
    ("n_head", "section.key=value"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(PrismError, match=message) as info:
        load_train_config(None, [override])
    assert "\n" not in str(info.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(PrismError, match="not found"):
        load_train_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[model\n")
    with pytest.raises(PrismError, match="not valid TOML"):
        load_train_config(tmp_path / "bad.toml")


def test_overrides_do_not_mutate_input():
    data = {"model": {"n_layer": 2}}
    out = apply_overrides(data, ["model.n_layer=3"])
    assert data["model"]["n_layer"] == 2 and out["model"]["n_layer"] == 3
    assert isinstance(TrainConfig(), TrainConfig)


def test_shipped_configs_load_by_name_and_path():
    from prism_lm.config import PACKAGED_CONFIGS

    names = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.toml"))
    assert {"prism-50m-tinystories", "gpt-50m-tinystories", "diff-50m-tinystories", "gpt2-30m-tinystories",
            "tiny-prism-cpu", "tiny-gpt-cpu"} <= set(names)
    for name in names:
        assert load_train_config(name) == load_train_config(PACKAGED_CONFIGS / f"{name}.toml")
    paper = load_train_config("prism-50m-tinystories")
    assert paper.model == load_train_config(None).model  # the paper recipe is also the default model
    assert (paper.run.eval_interval, paper.run.eval_iters) == (2000, 200)
    with pytest.raises(PrismError, match="shipped configs: .*prism-50m-tinystories"):
        load_train_config("prism-5m")


def test_equal_parameter_counts_of_shipped_baselines():
    import torch

    from prism_lm.config import resolve_vocab_size
    from prism_lm.model import PrismLM

    def count(name):
        cfg = load_train_config(name).model
        cfg.vocab_size = resolve_vocab_size(cfg.vocab_size, 365)  # the demo corpus's compact vocabulary
        with torch.device("meta"):
            return PrismLM(cfg).num_params()

    assert count("prism-50m-tinystories") == count("gpt-50m-tinystories") == 50_930_176
    assert count("diff-50m-tinystories") == 50_933_248
    assert count("tiny-prism-cpu") == count("tiny-gpt-cpu") == 836_736
    # the white-box family, matched in depth (counts in their headers)
    assert count("tiny-prism-ista-cpu") == 871_040 and count("tiny-crate-cpu") == 845_824
    assert count("prism-ista-50m-tinystories") == 51_991_040 and count("crate-50m-tinystories") == 51_003_392


def test_vocab_size_zero_is_resolved_by_one_rule():
    from prism_lm.config import resolve_vocab_size

    assert resolve_vocab_size(0, 365) == 384 and resolve_vocab_size(0, 384) == 384
    assert resolve_vocab_size(50304, 50257) == 50304 and resolve_vocab_size(512, None) == 512
    with pytest.raises(PrismError, match="larger than model.vocab_size"):
        resolve_vocab_size(256, 365)
    with pytest.raises(PrismError, match="no prepared data"):
        resolve_vocab_size(0, None)
    with pytest.raises(PrismError, match="rope_base"):
        load_train_config(None, ["model.rope_base=0"])


def test_flat_keys_of_earlier_releases_load_into_their_sections_with_one_notice_each(tmp_path, capsys):
    from prism_lm.model import config as model_config

    model_config._NOTIFIED.clear()
    old = tmp_path / "old.toml"
    old.write_text('[model]\nmlp = "ista"\nfreq_multiplier = "phi"\nista_mode = "residual"\nista_lambda = 0.2\n')
    new = tmp_path / "new.toml"
    new.write_text('[model]\nmlp = "ista"\n[model.prism]\nfreq_multiplier = "phi"\n'
                   '[model.ista]\nmode = "residual"\nl1_weight = 0.2\n')
    cfg = load_train_config(old, ["model.lambda_start=0.5"])
    assert cfg == load_train_config(new, ["model.prism.lambda_start=0.5"])
    assert (cfg.model.prism.freq_multiplier, cfg.model.ista.mode, cfg.model.ista.l1_weight) == ("phi", "residual", 0.2)
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    moved = [("freq_multiplier", "prism.freq_multiplier"), ("ista_mode", "ista.mode"),
             ("ista_lambda", "ista.l1_weight"), ("lambda_start", "prism.lambda_start")]
    assert sorted(notices) == sorted(f"warning: model.{flat} is now model.{nested} (the old name works for one more "
                                     "release)" for flat, nested in moved)
    load_train_config(old)  # once per key and process
    assert "warning" not in capsys.readouterr().err
    # the section's key wins over the flat one of an old file
    assert load_train_config(old, ["model.prism.freq_multiplier=2.0"]).model.prism.freq_multiplier == 2.0
