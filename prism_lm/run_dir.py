"""A training run's directory: the one module that knows its layout.

    RUN/config.toml                    the resolved config the run trains with
    RUN/metrics.jsonl                  iter and eval records (``train/metrics.py``)
    RUN/tb/                            TensorBoard events (optional)
    RUN/checkpoints/step-000200/       a training checkpoint (``checkpoint/training.py``)
    RUN/checkpoints/best/              a copy of the step checkpoint with the best val loss
    RUN/config_changes.jsonl           what a resume changed in the config, and at which step
    RUN/wandb-id                       the W&B run id, so a resume continues the same W&B run
    RUN/report/                        ``prism analyze``'s default output
    RUN/.lock                          the writer's lock (pid and host of the training that holds it)

A checkpoint directory holds ``config.json`` + ``model.safetensors`` (a model checkpoint) and, for
a training checkpoint, ``train_state.json`` + ``train_state.safetensors``; those names are here
too, so this module is a leaf that the checkpoint code builds on, never the other way round.
Step directories appear by rename (complete or absent); ``steps()`` lists only those holding a
training state, oldest first. ``reject`` moves a broken one aside as ``.rejected-step-*`` (never
deleted, never collided with) with a warning; which one is broken is the checkpoint code's call
(``checkpoint.training.newest_verified``). Everything else (loop, analysis, demo, CLI, sweeps)
opens runs through here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prism_lm.config import TrainConfig, dump_toml, load_train_config
from prism_lm.errors import PrismError, warn
from prism_lm.files import WriterLock, clean_temporaries, fsync_path, fsync_tree

# the files of a checkpoint directory
MODEL_CONFIG, MODEL_WEIGHTS = "config.json", "model.safetensors"
STATE_JSON, STATE_TENSORS = "train_state.json", "train_state.safetensors"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise PrismError(f"run directory {self.path} exists and is a file")
        self.config_path = self.path / "config.toml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.tensorboard_dir = self.path / "tb"
        self.checkpoints_dir = self.path / "checkpoints"
        self.best = self.checkpoints_dir / "best"
        self.changes_path = self.path / "config_changes.jsonl"
        self.wandb_id_path = self.path / "wandb-id"
        self.report_dir = self.path / "report"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def read_metrics(self) -> list[dict]:
        """The run's metrics records (``read_metrics`` of its metrics.jsonl)."""
        return read_metrics(self.metrics_path)

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
        if (self.best / MODEL_CONFIG).is_file():
            return self.best
        return self.newest()

    def had_checkpoints(self) -> bool:
        """Whether the run ever finished a checkpoint: a step, one moved aside as damaged, or ``best``."""
        if not self.checkpoints_dir.is_dir():
            return False
        return bool(self.steps()) or self.best.is_dir() or any(self.checkpoints_dir.glob(".rejected-*"))

    def holds_run(self) -> bool:
        return bool(self.steps()) or self.metrics_path.exists()

    def writer_lock(self) -> WriterLock:
        """Held by the one training that writes here; a second is refused naming the first."""
        return WriterLock(self.path / ".lock", f"run directory {self.path}")

    def clean_leftovers(self) -> None:
        """Remove temporary checkpoint directories left by a killed writer (hold the lock)."""
        for name in ("step-*", "best"):
            for path in clean_temporaries(self.checkpoints_dir, name):
                warn(f"removed {path.name}, a partial checkpoint left by an interrupted run")
        for stale in (self.checkpoints_dir / ".best.tmp", self.checkpoints_dir / ".best.old"):
            shutil.rmtree(stale, ignore_errors=True)
        for pruned in sorted(self.checkpoints_dir.glob(".pruning-*")) if self.checkpoints_dir.is_dir() else []:
            shutil.rmtree(pruned, ignore_errors=True)
            warn(f"removed {pruned.name}, an old checkpoint whose pruning was interrupted")

    def move_aside(self) -> Path:
        """Start over on purpose (``--resume never``): everything of the run so far moves, whole, into
        ``previous-N/`` inside the run directory; nothing is deleted."""
        n = 1
        while (self.path / f"previous-{n}").exists():
            n += 1
        aside = self.path / f"previous-{n}"
        aside.mkdir()
        for entry in sorted(self.path.iterdir()):
            if entry.name != ".lock" and entry != aside and not entry.name.startswith("previous-"):
                entry.rename(aside / entry.name)
        return aside

    def unfinished_steps(self) -> list[Path]:
        """Step directories without their training state (they never finished writing)."""
        if not self.checkpoints_dir.is_dir():
            return []
        return [p for p in sorted(self.checkpoints_dir.glob("step-*")) if not (p / STATE_JSON).is_file()]

    def reject(self, path: Path, problem: str) -> None:
        """Move a broken checkpoint aside (``.rejected-NAME``), with a warning naming the problem."""
        aside = path.with_name(f".rejected-{path.name}")
        n = 1
        while aside.exists():
            aside, n = path.with_name(f".rejected-{path.name}-{n}"), n + 1
        path.rename(aside)
        warn(f"skipping checkpoint {path} ({problem}); moved it to {aside.name}")

    def record_config_change(self, step: int, changes: dict[str, tuple]) -> None:
        with open(self.changes_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "changes": {k: list(v) for k, v in changes.items()}}) + "\n")

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` steps. Each leaves by one rename (``.pruning-NAME``, removed
        by ``clean_leftovers`` if a kill interrupts the deletion), so none is ever half there; the newest
        are durable already (``atomic_directory`` fsyncs before its rename)."""
        for old in self.steps()[:-keep]:
            doomed = old.with_name(f".pruning-{old.name}")
            old.rename(doomed)
            fsync_path(self.checkpoints_dir)
            shutil.rmtree(doomed)

    def replace_best(self, source: Path) -> None:
        """Make ``best`` a copy of ``source``, swapped in by renames; a failed copy (disk full) leaves the
        old ``best`` as it was and says so in one line."""
        tmp = self.best.with_name(".best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(source, tmp)
            fsync_tree(tmp)
        except OSError as exc:  # shutil.Error too: a list of (src, dst, reason), the first reason is enough
            shutil.rmtree(tmp, ignore_errors=True)
            reason = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else \
                (exc.strerror or str(exc))
            raise PrismError(f"could not copy {source.name} to {self.best} ({reason}); the previous best and the "
                             "step checkpoints are intact; --resume auto continues") from None
        old = self.best.with_name(".best.old")
        if self.best.exists():
            self.best.rename(old)
        tmp.rename(self.best)
        fsync_path(self.checkpoints_dir)
        shutil.rmtree(old, ignore_errors=True)

    def wandb_id(self, new_id: str) -> str:
        """The W&B run id recorded here, else ``new_id``, recorded."""
        run_id = self.wandb_id_path.read_text().strip() if self.wandb_id_path.is_file() else new_id
        self.wandb_id_path.write_text(run_id)
        return run_id

    def read_config(self) -> TrainConfig | None:
        """The config the run recorded (written by an earlier release too), or None before its first write."""
        return load_train_config(self.config_path, notify_legacy=False) if self.config_path.is_file() else None

    def write_config(self, cfg: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(dump_toml(cfg), encoding="utf-8")


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (its ``checkpoints/best``, else the newest step)."""
    path = Path(path)
    if not path.exists():
        raise PrismError(f"checkpoint not found: {path}")
    if (path / MODEL_CONFIG).is_file():
        return path
    found = RunDir(path).model_checkpoint()
    if found is None:
        raise PrismError(f"{path} holds no checkpoint (no {MODEL_CONFIG}, no checkpoints/best or checkpoints/step-*)")
    return found


def recorded_data_dir(path: str | Path) -> str:
    """The data folder the run of ``path`` (a run or one of its checkpoints) trained on: what
    ``--data`` defaults to in eval, analyze and ablate."""
    run = RunDir.of_checkpoint(resolve_checkpoint_dir(path))
    recorded = run.read_config() if run else None
    if recorded is None or not recorded.data.dir:
        raise PrismError(f"{path} records no data folder (not inside a run): pass --data")
    return recorded.data.dir


def trained_on_bos(path: str | Path) -> bool:
    """Whether the run of ``path`` (a run or one of its checkpoints) trained on windows that open on a
    document's separator (``data.sampler = "bos"``): eval, analyze and ablate then read such windows
    too. A checkpoint outside a run: False."""
    run = RunDir.of_checkpoint(resolve_checkpoint_dir(path))
    recorded = run.read_config() if run else None
    return recorded is not None and recorded.data.sampler == "bos"


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl; a partial last line (a kill mid-write) is dropped with a warning."""
    path = Path(path)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise PrismError(f"{path}: line {number} is not valid JSON") from None
            warn(f"{path}: dropped its partial last line (the run was interrupted while writing it)")
    return records
