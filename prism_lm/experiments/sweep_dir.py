"""A sweep folder: the one module that knows its layout.

    OUT/sweep.json                 the plan: every experiment, its runs (arm, grid point, seed, folder)
    OUT/.lock                      the sweep's writer lock (one ``prism sweep run`` at a time)
    OUT/data/<source>/             data the experiment files ask the sweep to prepare (``data = "embedded:6000"``)
    OUT/runs/<name>/job.json       what to run: the config, the identity, the evaluation, the labels
    OUT/runs/<name>/train/         the run's training directory (``run_dir.RunDir``)
    OUT/runs/<name>/log.txt        a local worker's output
    OUT/runs/<name>/.lock          held by the job running the run, from training through evaluation
    OUT/runs/<name>/result.json    once finished: the run's row, its evaluation, its per-head entries
    OUT/runs/<name>/heads.json     the full head statistics (``heads_init.json``: its untrained model)
    OUT/submitit/                  submitit's own files (its executors only)
    OUT/report/                    ``prism sweep report``'s default output

``prism sweep pack`` copies the plan and each finished run's job, result and head statistics (no
checkpoints, logs or prepared data): a folder of kilobytes that ``sweep run --out`` continues on
another machine (its unfinished runs start again there) and ``sweep report`` reads.

Everything that reads or writes a sweep (runner, job, report, CLI) goes through ``SweepDir`` and
``SweepRun``; the formats of the three JSON files are named here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prism_lm.errors import PrismError, warn
from prism_lm.files import WriterLock, atomic_directory, disk_errors, read_tagged_json, replace_json
from prism_lm.run_dir import RunDir

PLAN_FORMAT = "prism-lm sweep plan v1"
JOB_FORMAT = "prism-lm sweep job v1"
RESULT_FORMAT = "prism-lm sweep result v1"


class SweepDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise PrismError(f"sweep folder {self.path} exists and is a file; choose a new --out")
        self.plan_path, self.runs_dir, self.submitit_dir, self.report_dir = (
            self.path / name for name in ("sweep.json", "runs", "submitit", "report"))

    def __repr__(self) -> str:
        return f"SweepDir({str(self.path)!r})"

    def writer_lock(self) -> WriterLock:
        return WriterLock(self.path / ".lock", f"sweep folder {self.path}")

    def data_dir(self, source: str) -> Path:
        """Where the sweep prepares a ``data = SOURCE`` of its files (absolute)."""
        return (self.path / "data" / source.replace(" ", "").replace(":", "-").replace("/", "_")).resolve()

    def run(self, folder: str) -> SweepRun:
        return SweepRun(self.runs_dir / folder)

    def has_plan(self) -> bool:
        return self.plan_path.is_file()

    def read_plan(self) -> dict:
        return read_tagged_json(self.plan_path, PLAN_FORMAT, "a sweep plan",
                                missing=f"{self.path} is not a sweep folder (no sweep.json; see prism sweep run)")

    def write_plan(self, plan: dict) -> None:
        replace_json(self.plan_path, plan, PLAN_FORMAT)

    def pack(self, dest: str | Path) -> tuple[int, int]:
        """Copy the plan and the finished runs' small files (``PACKED_FILES``) into the new folder
        ``dest``; returns (runs packed, runs left out as unfinished). A running sweep can be packed:
        results are written whole, so a run is in the pack finished or not at all."""
        folders = planned_folders(self.read_plan())  # first: a folder that is no sweep says so
        if Path(dest).resolve().is_relative_to(self.path.resolve()):
            raise PrismError(f"--out {dest} lies inside the sweep folder {self.path}; choose a folder outside it")
        finished = [f for f in folders if self.run(f).read_result() is not None]
        with disk_errors("the pack", dest), atomic_directory(dest) as tmp:
            shutil.copy2(self.plan_path, tmp / self.plan_path.name)
            for folder in finished:
                source, target = self.run(folder).path, tmp / "runs" / folder
                target.mkdir(parents=True)
                for name in PACKED_FILES:
                    if (source / name).is_file():
                        shutil.copy2(source / name, target / name)
        return len(finished), len(folders) - len(finished)


def planned_folders(plan: dict) -> list[str]:
    """Every run folder a plan names, tuning runs included, each once (a run shared by experiments is
    one folder), sorted."""
    return sorted({entry["folder"] for exp in plan["experiments"].values()
                   for entry in (*exp["runs"], *exp.get("tune", {}).get("runs", []))})


RESULT_KEYS = ("row", "evaluate")
# what a pack keeps of a finished run: enough to skip it, report it and plot its heads
PACKED_FILES = ("job.json", "result.json", "heads.json", "heads_init.json")
# how long a job waits for its run's previous job (still saving its checkpoint after a killed sweep)
LOCK_WAIT_SECONDS = 300.0


class SweepRun:
    """One run's folder in a sweep."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.job_path, self.train_dir, self.log_path, self.result_path = (
            self.path / name for name in ("job.json", "train", "log.txt", "result.json"))

    @property
    def name(self) -> str:
        return self.path.name

    def train_run(self) -> RunDir:
        return RunDir(self.train_dir)

    def heads_path(self, which: str) -> Path:
        """``heads`` (the trained model's head statistics) or ``heads_init`` (its step 0)."""
        return self.path / f"{which}.json"

    def lock(self, wait: float = LOCK_WAIT_SECONDS) -> WriterLock:
        return WriterLock(self.path / ".lock", f"sweep run {self.path}", wait=wait)

    def read_job(self) -> dict:
        return read_tagged_json(self.job_path, JOB_FORMAT, "a sweep job description")

    def write_job(self, job: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        replace_json(self.job_path, job, JOB_FORMAT)

    def read_result(self) -> dict | None:
        """The run's result; None when there is none, or (with a warning) when it is damaged or lacks
        its keys, so the run counts as unfinished and is evaluated again."""
        if not self.result_path.is_file():
            return None
        try:
            result = read_tagged_json(self.result_path, RESULT_FORMAT, "a sweep result")
        except PrismError as exc:
            warn(f"{exc}; evaluating the run again")
            return None
        missing = [k for k in RESULT_KEYS if k not in result]
        if missing:
            warn(f"{self.result_path} lacks {missing[0]!r}; evaluating the run again")
            return None
        return result

    def write_result(self, result: dict) -> None:
        replace_json(self.result_path, result, RESULT_FORMAT)

    def write_heads(self, which: str, stats: dict) -> None:
        self.heads_path(which).write_text(json.dumps(stats) + "\n", encoding="utf-8")
