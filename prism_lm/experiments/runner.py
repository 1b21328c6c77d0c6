"""``prism sweep run``: expand experiment files to runs and run them, N at a time or on Slurm.

The sweep folder's layout is ``sweep_dir.SweepDir``'s. Design choices:
- Resumable by construction: a run with a ``result.json`` is skipped; any other is started with
  ``resume="auto"``, so an interrupted one continues from its last checkpoint exactly, and a run
  killed before its first checkpoint starts over.
- One sweep writes a folder at a time (a lock); a folder that holds another experiment's runs is
  refused unless ``extend``; a run whose recorded config differs from the plan is refused.
- Local workers are processes (``python -m prism_lm.experiments.job``), by default one per CPU,
  each given ``cpus // workers`` threads; a failure is reported with its log and does not stop the others.
  A run's thread count is recorded in its job file when it first starts and used on every rerun, so
  a continued run computes bitwise what an uninterrupted one would, whatever else remains to run.
- Local jobs die with the sweep: each asks the kernel for SIGTERM when its parent dies (Linux
  ``PR_SET_PDEATHSIG``), so a sweep killed by any signal, kill -9 included, leaves no orphan
  training; the job saves its checkpoint and exits. Each job holds its run folder's lock from
  training through evaluation, and a rerun's job waits for a previous holder still saving.
- The Slurm path goes through submitit, whose local executor runs the same submission code as
  local processes (``--executor submitit-local``: how that path is tested, and a dry run of a
  cluster sweep on one machine).
- SIGINT/SIGTERM/SIGHUP: every running run is asked to stop (it saves a checkpoint), the sweep waits for
  them and exits with status 130; running the same command again continues. A run stopped before
  its training began is "interrupted" like the others, not failed.
- A copied (or moved) sweep folder continues where it now lives: ``prism sweep run FILE --out COPY``.
  Run folders are rewritten to the new place, data the sweep prepared travels inside it, and a
  resume accepts a changed ``data.dir`` when its manifest's fingerprint is the one the checkpoint
  recorded (the same tokens, wherever they are).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from prism_lm.config import TrainConfig, from_dict, to_dict
from prism_lm.errors import PrismError
from prism_lm.experiments.job import INTERRUPTED, PARENT_ENV, EvaluateSpec, needs_annotations
from prism_lm.experiments.spec import (
    SOURCE_JOIN,
    Experiment,
    PlannedRun,
    apply_tuning,
    choose_tuned,
    identity,
    load_experiments,
    point_key,
    tune_evaluate,
    tuned_group,
)
from prism_lm.experiments.sweep_dir import SweepDir, SweepRun
from prism_lm.experiments.verdicts import planned_power, verdict_defaults

EXECUTORS = ("local", "slurm", "submitit-local")


@dataclass(eq=False)
class Task:
    run: PlannedRun
    folder: SweepRun
    evaluate: EvaluateSpec
    needs: set[str] = field(default_factory=set)  # the columns the verdicts and ladders read from its row
    handle: object = None
    started: float = 0.0
    stop_asked: bool = False

    @property
    def path(self) -> Path:
        return self.folder.path


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan(experiments: list[Experiment], known: dict[str, str] | None = None) -> dict:
    """{"experiments": {name: {...}}, "runs": {folder: identity}}: each experiment's runs by folder
    (a run shared by several experiments has one folder: the one ``known`` ({folder: identity}, the
    sweep's plan so far) gives it, else named after its first appearance, so a run keeps its folder
    whichever phase or file plans it next). An experiment with ``[tune]`` lists its tuning runs under
    "tune", and its verdict runs only once its choices are in."""
    existing = {identity: folder for folder, identity in (known or {}).items()}
    folders: dict[str, str] = {}

    def entries(runs: list[PlannedRun]) -> list[dict]:
        return [{"arm": r.arm, "group": r.group, "grid": r.grid, "seed": r.seed,
                 "folder": folders.setdefault(r.identity, existing.get(r.identity, r.name))} for r in runs]

    body = {}
    for e in experiments:
        body[e.name] = {"file": str(e.path), "description": e.description, "seeds": e.seeds, "arms": e.arms,
                        "groups": e.groups, "runs": entries(e.runs) if e.planned else [],
                        "verdicts": [vars(v) for v in e.verdicts], "evaluate": to_dict(e.evaluate),
                        "min_seeds": e.min_seeds, "gates": [g.record() for g in e.gates]}
        if e.ladder:
            body[e.name]["ladder"] = vars(e.ladder)
        if e.tune:
            body[e.name]["tune"] = {**vars(e.tune), "runs": entries(e.tune_runs)}
    return {"experiments": body, "runs": {folder: identity for identity, folder in folders.items()}}


def _phase_runs(e: Experiment) -> list[tuple[PlannedRun, EvaluateSpec]]:
    """The runs of ``e`` that can run now, with what each evaluates (in ``plan``'s order)."""
    runs = [(r, tune_evaluate(e.evaluate)) for r in e.tune_runs]
    return runs + ([(r, e.evaluate) for r in e.runs] if e.planned else [])


def _merge_plan(sweep: SweepDir, new: dict, extend: bool) -> dict:
    if not sweep.has_plan():
        return new
    old = sweep.read_plan()
    added = sorted(set(new["runs"]) - set(old["runs"]))
    if added and not extend:
        raise PrismError(f"{sweep.path} holds the runs of another experiment file ({len(added)} planned runs are not "
                         f"in it, e.g. {added[0]}); use a new --out, or pass --extend to add them")
    experiments = dict(old["experiments"])
    for name, entry in new["experiments"].items():
        before = experiments.get(name)
        if before is None or _same_claim(before, entry):
            experiments[name] = entry  # a later phase of the same file (its tuned runs) completes its record
            continue
        if not extend:
            raise PrismError(f"{sweep.path} records experiment {name!r} from {before['file']} with arms "
                             f"{before['arms']}; {entry['file']} names it with arms {entry['arms']}: use a new --out, "
                             "or pass --extend to add this file's record beside it (nothing is relabelled)")
        n = 2
        while f"{name}@{n}" in experiments:
            n += 1
        experiments[f"{name}@{n}"] = entry
    return {"experiments": experiments, "runs": {**old["runs"], **new["runs"]}}


def _same_claim(before: dict, entry: dict) -> bool:
    """Whether two plan entries are one file's record of one experiment (its arms, groups and verdicts)."""
    keys = ("file", "arms", "groups")
    if before.get("gates", []) != entry.get("gates", []):
        return False
    same_verdicts = ([verdict_defaults(v) for v in before.get("verdicts", [])]
                     == [verdict_defaults(v) for v in entry.get("verdicts", [])])
    return same_verdicts and all(before.get(k) == entry.get(k) for k in keys)


def _prepare_data(experiments: list[Experiment], sweep: SweepDir, log) -> None:
    """Prepare every ``data = SOURCE`` (or list of sources) once into the sweep's data folder and point
    its runs there."""
    from prism_lm.data.prepare import prepare
    from prism_lm.data.shards import read_manifest

    for source in sorted({e.data_source for e in experiments if e.data_source}):
        target = sweep.data_dir(source)
        try:
            read_manifest(target)
        except PrismError:
            log(f"[sweep] preparing {source} in {target}")
            prepare(source.split(SOURCE_JOIN), target, val_fraction=0.05, compact_vocab=True, progress=False)
        for e in experiments:
            for r in (*e.tune_runs, *e.runs):
                if r.data_source == source:
                    r.config.data.dir = str(target)


def _tasks(experiments: list[Experiment], new_plan: dict, sweep: SweepDir) -> list[Task]:
    """One task per run folder, with the union of what every experiment sharing it evaluates."""
    tasks: dict[str, Task] = {}
    for e in experiments:
        entry = new_plan["experiments"][e.name]
        listed = entry.get("tune", {}).get("runs", []) + entry["runs"]
        for (r, evaluate), listed_run in zip(_phase_runs(e), listed, strict=True):
            folder = listed_run["folder"]
            if folder in tasks:
                tasks[folder].evaluate = tasks[folder].evaluate.union(evaluate)
            else:
                tasks[folder] = Task(r, sweep.run(folder), evaluate)
            tasks[folder].needs |= ({v.metric for v in e.verdicts} | ({e.ladder.metric} if e.ladder else set())
                                    | {g.metric for g in e.gates})
    return list(tasks.values())


def _write_job(task: Task) -> None:
    r, folder = task.run, task.folder
    r.config.run.out_dir = str(folder.train_dir.resolve())
    r.config.run.progress = False
    body = {"config": to_dict(r.config), "identity": r.identity, "evaluate": to_dict(task.evaluate),
            "labels": _labels(r)}
    if folder.job_path.is_file():  # the folder name holds the identity; the recorded config must still have it
        recorded = folder.read_job()
        was = identity(from_dict(TrainConfig, recorded["config"]), r.data_source)
        if was != r.identity:
            raise PrismError(f"run {folder.path} was started with a different config (identity {was}, planned "
                             f"{r.identity}); refusing to mix (move it aside to start it again)")
        if "threads" in recorded:
            body["threads"] = recorded["threads"]
        claims = recorded.get("claims", [recorded["labels"]])  # who planned the run: added to, never replaced
        body["labels"] = recorded["labels"]
        body["claims"] = claims + ([] if _labels(r) in claims else [_labels(r)])
    folder.write_job(body)


def _labels(r: PlannedRun) -> dict:
    """The labels a plan gives a run: its experiment, arm, group, seed and grid point."""
    return {"experiment": r.experiment, "arm": r.arm, "group": r.group, "seed": r.seed, **r.grid}


def _threads_for(task: Task, default: int) -> int:
    """The thread count the run started with (recorded in its job file), else ``default``, recorded now."""
    job = task.folder.read_job()
    if not job.get("threads"):
        job["threads"] = default
        task.folder.write_job({k: v for k, v in job.items() if k != "format"})
    return int(job["threads"])


def _is_finished(task: Task) -> bool:
    """A result exists, from an evaluation that covers the one asked for now (a run shared with a
    tuned file's verdict runs is evaluated for both once, not again in each phase), with every column
    the verdicts read that this code computes (a result from older code that lacks one is evaluated
    again; training resumes at its last step, so nothing retrains)."""
    result = task.folder.read_result()
    if result is None or not from_dict(EvaluateSpec, result["evaluate"], "evaluate").covers(task.evaluate):
        return False
    row = result["row"]
    if row.get("diverged"):  # nothing is evaluated from a diverged model
        return True
    computed = task.evaluate.columns(task.run.config)
    return all(c in row for c in task.needs & computed if not needs_annotations(c))


def run_sweep(file: str | Path, out: str | Path, workers: int | None = None, executor: str = "local",
              extend: bool = False, log=print) -> int:
    """Run every unfinished run of ``file`` into ``out``; returns the exit status (0 all finished,
    1 some failed, 130 stopped by a signal). Files with ``[tune]`` run in two phases: the tuning
    runs, then, with each arm's choice made from them, the verdict runs."""
    if executor not in EXECUTORS:
        raise PrismError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and workers < 1:
        raise PrismError(f"--workers must be >= 1, got {workers}")
    if executor == "slurm" and shutil.which("sbatch") is None:  # before anything is written
        raise PrismError("--executor slurm: no Slurm here (sbatch is not on PATH); run on the cluster's login "
                         "node, or use --executor local")
    experiments = load_experiments(file)
    for e in experiments:  # before anything trains: can the seeds see what each primary must see?
        for line in planned_power(e.name, e.verdicts, len(e.seeds)):
            log(line)
    sweep = SweepDir(out)
    sweep.path.mkdir(parents=True, exist_ok=True)
    if executor != "local":
        check_private_folder(sweep.path, log)
    with sweep.writer_lock():
        status = _run_phase(experiments, sweep, workers, executor, extend, log)
        tuned = [e for e in experiments if not e.planned]
        if status or not tuned:
            return status
        for e in tuned:
            chosen = choose_tuned(e.tune, _tuning_scores(e, sweep), e.groups)
            apply_tuning(e, chosen)
            log(f"[sweep] {e.name}: tuned on the held-out part of train ({e.tune.metric}): "
                + "; ".join(f"{group} {point}" for group, point in chosen.items()))
        return _run_phase(experiments, sweep, workers, executor, True, log)  # this file's own second phase


def _tuning_scores(e: Experiment, sweep: SweepDir) -> dict[tuple[str, str], list[float]]:
    """(verdict group, tuning point) -> the tuning metric of each finished tuning run."""
    folders = {identity: folder for folder, identity in sweep.read_plan()["runs"].items()}
    scores: dict[tuple[str, str], list[float]] = {}
    for r in e.tune_runs:
        result = sweep.run(folders[r.identity]).read_result()
        value = (result or {}).get("row", {}).get(e.tune.metric)
        key = (tuned_group(r.group), point_key(r.grid))
        scores.setdefault(key, [])
        if isinstance(value, (int, float)) and math.isfinite(value):
            scores[key].append(float(value))
    return scores


def _run_phase(experiments: list[Experiment], sweep: SweepDir, workers: int | None, executor: str, extend: bool,
               log) -> int:
    """Plan, write the jobs of and run every run that can run now."""
    new_plan = plan(experiments, sweep.read_plan()["runs"] if sweep.has_plan() else None)
    merged = _merge_plan(sweep, new_plan, extend)
    _prepare_data(experiments, sweep, log)
    tasks, finished = [], 0
    for task in _tasks(experiments, new_plan, sweep):
        _write_job(task)
        if _is_finished(task):
            finished += 1
        else:
            tasks.append(task)
    sweep.write_plan(merged)
    total = finished + len(tasks)
    summary = f"[sweep] {total} runs in {len(experiments)} experiment(s): {finished} finished, {len(tasks)} to run"
    if not tasks:
        log(summary)
        return 0
    pool = _pool(executor, workers, len(tasks), experiments, sweep)
    threads = pool.threads or "the cluster's"
    log(f"{summary} ({executor}, {pool.workers} at a time, {threads} thread(s) each)")
    kept = sorted({n for t in tasks if (n := t.folder.read_job().get("threads")) and n != pool.threads})
    if kept and pool.threads:
        log(f"[sweep] runs started earlier keep their thread count ({', '.join(map(str, kept))}), so they continue "
            "exactly")
    return _drive(pool, tasks, finished, total, log)


def _pool(executor: str, workers: int | None, runs: int, experiments: list[Experiment], sweep: SweepDir):
    if executor == "local":  # never more workers than runs: the threads go to the runs there are
        return LocalPool(min(workers or default_workers(), runs))
    slurm = next((e.slurm for e in experiments if e.slurm), {})
    return SubmititPool(sweep.submitit_dir, executor, workers or runs, slurm)


def default_workers() -> int:
    """One run per CPU, one thread each: for the tiny configs on 2 cores, two one-thread runs did 1.32x
    the steps per second of one two-thread run (benchmarks/RESULTS.md). Bigger models: pass --workers."""
    return available_cpus()


def _drive(pool, tasks: list[Task], finished: int, total: int, log) -> int:
    pending, running, failed, interrupted = list(tasks), [], [], 0
    stop = {"signal": None}

    def handle(signum, frame):
        if stop["signal"] is None:
            log(f"[sweep] {signal.Signals(signum).name}: stopping {len(running)} running run(s) after their next "
                f"checkpoint; run the same command again to continue")
        stop["signal"] = signum
        for task in running:
            task.stop_asked = True
            pool.stop(task)

    old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    bar = _progress(total, finished)
    try:
        while pending or running:
            while pending and len(running) < pool.workers and stop["signal"] is None:
                task = pending.pop(0)
                pool.start(task)
                task.started = time.time()
                running.append(task)
            for task, status, detail in pool.poll(running):
                running.remove(task)
                seconds = time.time() - task.started
                if status in ("done", "diverged"):
                    finished += 1
                    bar.update(1)
                    _say(bar, log, f"[sweep] {finished}/{total} {status}: {task.path.name} ({seconds:.0f}s)"
                         + _headline(task.folder))
                elif status == "interrupted":
                    interrupted += 1
                else:
                    failed.append(task)
                    _say(bar, log, f"[sweep] FAILED: {task.path.name}: {detail} (log: {pool.log_of(task)})")
            if stop["signal"] is not None and not running:
                break
            time.sleep(0.2)
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    left = total - finished
    if stop["signal"] is not None:
        log(f"[sweep] stopped: {finished}/{total} finished, {left} left; run the same command again to continue")
        return 130
    if failed:
        log(f"[sweep] {len(failed)} run(s) failed: " + ", ".join(t.path.name for t in failed))
        return 1
    log(f"[sweep] all {total} runs finished")
    return 0


def _headline(run: SweepRun) -> str:
    result = run.read_result()
    row = result["row"] if result else {}
    losses = [f"{k} {v:.3f}" for k, v in row.items() if k.startswith("val_loss_") and v is not None]
    return f", {', '.join(losses)}" if losses else ""


def _progress(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="sweep", unit="run", disable=not sys.stderr.isatty(),
                dynamic_ncols=True)


def _say(bar, log, line: str) -> None:
    if bar.disable:
        log(line)
    else:
        bar.write(line)


class LocalPool:
    """Runs as child processes of this one, ``cpus // workers`` threads each."""

    def __init__(self, workers: int):
        self.workers = workers
        self.threads = max(1, available_cpus() // workers)

    def start(self, task: Task) -> None:
        threads = _threads_for(task, self.threads)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        log = open(self.log_of(task), "a", encoding="utf-8")  # noqa: SIM115 (closed in poll)
        log.write(f"--- started {time.strftime('%Y-%m-%d %H:%M:%S')} with {threads} thread(s)\n")
        log.flush()
        # its own session: a Ctrl-C reaches the sweep, which asks each run to stop exactly once; the
        # job asks the kernel for a SIGTERM when the sweep dies, however it dies (job.die_with_parent)
        task.handle = (subprocess.Popen([sys.executable, "-m", "prism_lm.experiments.job", str(task.path),
                                         str(threads)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True), log)

    def poll(self, running: list[Task]):
        for task in list(running):
            proc, log = task.handle
            code = proc.poll()
            if code is None:
                continue
            log.close()
            if code == 0:
                yield task, ("diverged" if task.folder.read_result()["diverged"] else "done"), ""
            elif code == INTERRUPTED or (task.stop_asked and code == -signal.SIGTERM):
                yield task, "interrupted", ""  # the latter: stopped before training had set its handler
            else:
                yield task, "failed", _last_error(self.log_of(task), code)

    def stop(self, task: Task) -> None:
        proc, _ = task.handle
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def log_of(self, task: Task) -> Path:
        return task.folder.log_path


def _last_error(log: Path, code: int) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or [f"exit status {code}"])[-1].strip()


def check_private_folder(folder: Path, log=print) -> None:
    """submitit pickles each job into the sweep folder and unpickles it to run it: whoever can write
    there can run code as you. A folder (or its submitit folder) that the group or others may write is
    refused in one line; otherwise the line that says so is printed."""
    for path in (folder, folder / "submitit"):
        if path.exists() and path.stat().st_mode & 0o022:
            raise PrismError(f"{path} is writable by its group or by others, and submitit runs the pickled jobs it "
                             f"finds there: make it yours alone (chmod go-w {path}) or use --executor local")
    log(f"[sweep] submitit keeps its jobs as pickles in {folder / 'submitit'}: keep {folder} writable by you alone")


class SubmititPool:
    """Submits runs through submitit: to Slurm, or to its local executor (same code, local processes)."""

    def __init__(self, folder: Path, executor: str, workers: int, slurm: dict):
        try:
            import submitit
        except ImportError:
            raise PrismError("--executor slurm needs submitit: pip install submitit") from None
        cluster = "slurm" if executor == "slurm" else "local"
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = {"timeout_min": slurm.get("timeout_min", 60), "name": "prism-sweep"}
        if "cpus_per_task" in slurm:
            params["cpus_per_task"] = slurm["cpus_per_task"]
        if "gpus_per_node" in slurm:
            params["gpus_per_node"] = slurm["gpus_per_node"]
        if cluster == "slurm":
            params.update({f"slurm_{k}": v for k, v in slurm.items()
                           if k in ("partition", "account", "qos")})
            if "mem_gb" in slurm:
                params["mem_gb"] = slurm["mem_gb"]
        self.executor.update_parameters(**params)
        self.workers = workers
        self.threads = slurm.get("cpus_per_task", 0) if cluster == "slurm" else max(1, available_cpus() // workers)

    def start(self, task: Task) -> None:
        from prism_lm.experiments.job import run_job

        threads = _threads_for(task, self.threads) if self.threads else 0  # 0: Slurm's cpus_per_task decides
        task.handle = self.executor.submit(run_job, str(task.path), threads)

    def poll(self, running: list[Task]):
        for task in list(running):
            job = task.handle
            if not job.done():
                continue
            try:
                status = job.result()
            except Exception as exc:  # submitit re-raises the job's failure here, whatever it was
                yield task, "failed", str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                continue
            yield task, status, ""

    def stop(self, task: Task) -> None:
        task.handle.cancel(check=False)

    def log_of(self, task: Task) -> Path:
        return Path(task.handle.paths.stderr)
