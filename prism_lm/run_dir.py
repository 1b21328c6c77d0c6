"""A training run's directory: the one module that knows its layout.

    RUN/config.toml                    the resolved config the run trains with
    RUN/metrics.jsonl                  iter and eval records (``train/metrics.py``)
    RUN/tb/                            TensorBoard events (optional)
    RUN/checkpoints/step-000200/       a training checkpoint (``checkpoint/training.py``)
    RUN/checkpoints/best/              a copy of the step checkpoint with the best val loss

Step directories appear by rename (complete or absent); ``steps()`` lists only those holding a
training state, oldest first. Everything else (loop, analysis, demo, CLI) opens runs through here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prism_lm.checkpoint.model import CONFIG
from prism_lm.checkpoint.training import STATE_JSON
from prism_lm.config import TrainConfig, dump_toml, load_train_config


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.toml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.tensorboard_dir = self.path / "tb"
        self.checkpoints_dir = self.path / "checkpoints"
        self.best = self.checkpoints_dir / "best"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunDir | None:
        """The run a checkpoint directory belongs to (``RUN/checkpoints/NAME``), if it is in one."""
        run = cls(Path(checkpoint).parent.parent)
        return run if run.metrics_path.is_file() else None

    def step_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"step-{step:06d}"

    def steps(self) -> list[Path]:
        """Complete step checkpoints, oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoints_dir.glob("step-*") if (p / STATE_JSON).is_file())

    def newest(self) -> Path | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def model_checkpoint(self) -> Path | None:
        """The checkpoint a user means by the run: ``best``, else the newest step."""
        if (self.best / CONFIG).is_file():
            return self.best
        return self.newest()

    def holds_run(self) -> bool:
        return bool(self.steps()) or self.metrics_path.exists()

    def prune(self, keep: int) -> None:
        for old in self.steps()[:-keep]:
            shutil.rmtree(old)

    def replace_best(self, source: Path) -> None:
        """Make ``best`` a copy of ``source``, swapped in by renames."""
        tmp = self.best.with_name(".best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        old = self.best.with_name(".best.old")
        if self.best.exists():
            self.best.rename(old)
        tmp.rename(self.best)
        shutil.rmtree(old, ignore_errors=True)

    def read_config(self) -> TrainConfig | None:
        return load_train_config(self.config_path) if self.config_path.is_file() else None

    def write_config(self, cfg: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(dump_toml(cfg), encoding="utf-8")
