"""A two-arm, two-seed, few-step sweep end to end: run, skip, report, bad input (fast), then
interruption and continuation, and the submitit path (slow)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prism_lm.errors import PrismError
from prism_lm.experiments.report import write_report
from prism_lm.experiments.runner import run_sweep
from prism_lm.experiments.sweep_dir import PACKED_FILES, SweepDir, SweepRun
from prism_lm.run_dir import read_metrics
from tests.helpers import write_experiment

ROOT = Path(__file__).resolve().parents[2]


def read_result(path: Path) -> dict | None:
    return SweepRun(path).read_result()


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished sweep of the two-arm file: (experiment file, sweep folder, log lines)."""
    root = tmp_path_factory.mktemp("sweep")
    path = write_experiment(root)
    lines = []
    assert run_sweep(path, root / "out", workers=2, log=lines.append) == 0
    return path, root / "out", lines


def test_a_sweep_runs_every_arm_and_seed_once_in_named_folders(sweep):
    _, out, lines = sweep
    folders = sorted(p.name for p in (out / "runs").iterdir())
    assert len(folders) == 4 and {f.split("-s")[0] for f in folders} == {"prism", "gpt"}
    assert sum("done:" in line for line in lines) == 4 and lines[-1] == "[sweep] all 4 runs finished"
    cpus = len(os.sched_getaffinity(0))
    assert f"(local, 2 at a time, {max(1, cpus // 2)} thread(s) each)" in lines[1]
    for folder in folders:
        row = read_result(out / "runs" / folder)["row"]
        assert row["steps"] == 8 and row["tokens_seen"] == 8 * 4 * 32 and not row["diverged"]
        assert row["val_loss_16"] > 0 and row["val_loss_32"] > 0 and row["logged_steps"] == 8
        assert 0 <= row["clipped_fraction"] <= 1 and row["grad_norm_max"] >= row["grad_norm_mean"] > 0
    prism = read_result(next((out / "runs").glob("prism-s0-*")))["row"]
    assert {"signal_median_lag", "noise_median_lag", "stream_diff_median_lag", "signal_diversity",
            "init_stream_diff_median_lag", "all_median_lag", "init_all_sink_first4", "signal_sink_first4_doc_start",
            "noise_sink_first_mid_doc", "all_sink_first4_mid_doc"} <= set(prism)
    assert prism["all_median_lag"] == pytest.approx((prism["signal_median_lag"] + prism["noise_median_lag"]) / 2)
    logged = [r for r in read_metrics(next((out / "runs").glob("prism-s0-*")) / "train" / "metrics.jsonl")
              if r["type"] == "iter"]
    assert prism["lambda_final"] == logged[-1]["prism_lambda"] and 0.01 <= prism["lambda_final"] <= 0.1  # the schedule
    gpt = read_result(next((out / "runs").glob("gpt-s0-*")))["row"]
    assert gpt["all_sink_first4"] == pytest.approx(gpt["main_sink_first4"])
    assert gpt["lambda_final"] is None  # no λ to report


def test_running_again_skips_finished_runs(sweep):
    path, out, _ = sweep
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    lines = []
    assert run_sweep(path, out, log=lines.append) == 0
    assert lines == ["[sweep] 4 runs in 1 experiment(s): 4 finished, 0 to run"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow  # 2-5 s; its class keeps a default case beside it
def test_a_result_lacking_a_verdict_column_is_evaluated_again_without_retraining(sweep):
    path, out, _ = sweep
    run = next((out / "runs").glob("prism-s0-*"))
    result = read_result(run)
    old_value = result["row"].pop("val_loss_32")  # as a result written by older code would lack a column
    SweepRun(run).write_result(result)
    weights = {p: p.stat().st_mtime_ns for p in (run / "train").rglob("*.safetensors")}
    lines = []
    assert run_sweep(path, out, log=lines.append) == 0
    assert lines[0].startswith("[sweep] 4 runs in 1 experiment(s): 3 finished, 1 to run")
    row = read_result(run)["row"]
    assert row["val_loss_32"] == pytest.approx(old_value, rel=1e-6) and row["steps"] == 8
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # nothing trained again


def test_the_report_has_a_row_per_run_seed_intervals_paired_differences_and_a_verdict(sweep):
    _, out, _ = sweep
    paths = write_report(out)
    rows = list(csv.DictReader(open(paths["csv"], encoding="utf-8")))
    assert len(rows) == 4 and {r["arm"] for r in rows} == {"prism", "gpt"} and {r["seed"] for r in rows} == {"0", "1"}
    import pyarrow.parquet as pq

    table = pq.read_table(paths["parquet"])
    assert table.num_rows == 4 and table.schema.field("val_loss_32").type == "double"
    report = json.loads(paths["json"].read_text())
    exp = report["experiments"]["two"]
    arm = exp["arms"]["prism"]["metrics"]["val_loss_32"]
    values = [float(r["val_loss_32"]) for r in rows if r["arm"] == "prism"]
    assert arm["n"] == 2 and arm["mean"] == pytest.approx(sum(values) / 2)
    half = 12.7062 * abs(values[0] - values[1]) / 2 ** 0.5 / 2 ** 0.5  # t(1) * sd / sqrt(n)
    assert arm["ci95"] == pytest.approx([arm["mean"] - half, arm["mean"] + half], rel=1e-5)
    (verdict,) = exp["verdicts"]
    by_seed = {(r["arm"], r["seed"]): float(r["val_loss_32"]) for r in rows}
    diffs = [by_seed["prism", s] - by_seed["gpt", s] for s in ("0", "1")]
    assert verdict["interval"]["mean"] == pytest.approx(sum(diffs) / 2) and verdict["interval"]["seeds"] == [0, 1]
    assert verdict["verdict"] == "too few seeds (n = 2; at least 5 decide)"  # two seeds decide nothing
    assert "prism trained median_lag" in exp["streams"] and exp["streams"]["prism trained median_lag"]["runs"] == 2
    md = paths["md"].read_text()
    assert "Student-t" in md and "Holm" in md
    from prism_lm.experiments.report import FIGURE_TEXT
    from prism_lm.experiments.verdicts import DECISION_WORDS

    for word, meaning in DECISION_WORDS.items():  # what each decision word means, at the top
        assert f"- **{word}**: {meaning}" in md
    assert "### Verdicts\n\n*sign: arm − baseline" in md and "interval: 95% Student-t" in md  # short heading, caption
    assert f"**{FIGURE_TEXT['loss'][0]}**" in md and FIGURE_TEXT["loss"][1] in md  # figures titled and captioned
    assert "| exploratory | PRISM beats GPT | val_loss_32 | difference, lower supports | prism − gpt |" in md
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "src='http" not in page and 'src="http' not in page
    assert (out / "report" / "figures" / "two_loss.png").is_file()


def test_a_folder_of_another_experiment_is_refused_unless_extended(sweep, tmp_path):
    path, out, _ = sweep
    other = write_experiment(tmp_path, extra="", name="other.toml")
    other.write_text(other.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    with pytest.raises(PrismError, match="holds the runs of another experiment file.*--extend"):
        run_sweep(other, out, log=lambda _: None)
    assert len(list((out / "runs").iterdir())) == 4  # nothing started, nothing lost


def test_a_run_whose_recorded_config_changed_is_refused(sweep, tmp_path):
    path, out, _ = sweep
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    job = next((copy / "runs").glob("prism-s0-*")) / "job.json"
    data = json.loads(job.read_text())
    data["config"]["optim"]["lr"] = 0.5
    job.write_text(json.dumps(data))
    with pytest.raises(PrismError, match="started with a different config.*refusing to mix"):
        run_sweep(path, copy, log=lambda _: None)


@pytest.mark.slow
def test_a_copied_sweep_folder_is_evaluated_again_where_its_data_now_lives(sweep, tmp_path):
    path, out, _ = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    moved = tmp_path / "moved-away"
    out.rename(moved)  # the original (and the data the runs recorded) is gone from where it was
    try:
        run = next((copy / "runs").glob("prism-s0-*"))
        before = read_result(run)
        (run / "result.json").unlink()
        weights = {p: p.stat().st_mtime_ns for p in (run / "train").rglob("*.safetensors")}
        lines = []
        assert run_sweep(path, copy, log=lines.append) == 0, lines
        after = read_result(run)
        assert after["row"]["val_loss_32"] == before["row"]["val_loss_32"]  # the same tokens, read from the copy
        assert {p: p.stat().st_mtime_ns for p in weights} == weights  # nothing retrained
        job = SweepRun(run).read_job()
        assert job["config"]["data"]["dir"].startswith(str(copy)) and job["config"]["run"]["out_dir"].startswith(
            str(copy))
    finally:
        moved.rename(out)


def test_each_run_keeps_the_thread_count_it_started_with(sweep, tmp_path):
    from prism_lm.experiments.runner import LocalPool, _tasks, plan
    from prism_lm.experiments.spec import load_experiments
    from prism_lm.experiments.sweep_dir import SweepDir

    path, out, _ = sweep
    cpus = len(os.sched_getaffinity(0))
    for run in (out / "runs").iterdir():  # recorded at the first start: 2 workers, cpus // 2 threads each
        assert SweepRun(run).read_job()["threads"] == max(1, cpus // 2)
    experiments = load_experiments(path)
    task = _tasks(experiments, plan(experiments, SweepDir(out).read_plan()["runs"]), SweepDir(out))[0]
    job = task.folder.read_job()
    task.folder.write_job({**job, "threads": 7})
    pool = LocalPool(1)  # would give cpus threads to a new run
    pool.start(task)
    task.handle[0].kill()
    task.handle[0].wait()
    task.handle[1].close()
    assert task.folder.log_path.read_text().splitlines()[-1].endswith("with 7 thread(s)")
    assert task.handle[0].args[-1] == "7"
    task.folder.write_job(job)


def test_a_run_stopped_before_its_training_began_is_interrupted_not_failed(sweep, tmp_path):
    from prism_lm.experiments.runner import LocalPool, _tasks, plan
    from prism_lm.experiments.spec import load_experiments
    from prism_lm.experiments.sweep_dir import SweepDir

    path, out, _ = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    experiments = load_experiments(path)
    task = _tasks(experiments, plan(experiments, SweepDir(copy).read_plan()["runs"]), SweepDir(copy))[0]
    pool = LocalPool(1)
    pool.start(task)
    task.stop_asked = True  # as the sweep's signal handler does, while the job is still importing
    pool.stop(task)
    deadline = time.time() + 60
    statuses = []
    while not statuses and time.time() < deadline:
        statuses = list(pool.poll([task]))
        time.sleep(0.05)
    assert task.handle[0].returncode == -signal.SIGTERM  # killed before training set its handler
    assert statuses == [(task, "interrupted", "")]


@pytest.mark.slow
def test_a_failed_run_is_reported_with_its_log_and_the_others_finish(tmp_path):
    path = write_experiment(tmp_path, steps=2)
    path.write_text(path.read_text().replace("[arms.gpt]", "[arms.broken.run]\ndevice = \"cuda:7\"\n[arms.gpt]")
                    .replace("seeds = [0, 1]", "seeds = [0]"))
    lines = []
    assert run_sweep(path, tmp_path / "out", log=lines.append) == 1
    cpus = len(os.sched_getaffinity(0))  # 3 runs, one worker per CPU, never more workers than runs
    assert f"{min(cpus, 3)} at a time, {max(1, cpus // min(cpus, 3))} thread(s) each" in lines[1]
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and "broken-s0" in failed[0] and "log.txt" in failed[0]
    assert sum("done:" in line for line in lines) == 2


def test_the_cli_runs_and_reports_and_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "tiny-prism-cpu"\nseeds = [0]\n[arms.a]\n[arms.b.model]\nnope = 1\n')
    proc = subprocess.run([sys.executable, "-m", "prism_lm", "sweep", "run", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "prism_lm", "sweep", "report", str(tmp_path)],
                          capture_output=True, text=True, env=env())
    assert proc.returncode == 2 and "not a sweep folder" in proc.stderr


def _pack_with_one_run_unfinished(sweep, tmp_path) -> tuple[Path, Path, Path]:
    """The finished sweep copied, one run's result removed (a session ended during it), and packed:
    (the copy, the unfinished run's folder in it, the pack on "another machine")."""
    _, out, _ = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    unfinished = next((copy / "runs").glob("gpt-s1-*"))
    (unfinished / "result.json").unlink()
    pack = tmp_path / "other-machine" / "pack"
    assert SweepDir(copy).pack(pack) == (3, 1)
    return copy, unfinished, pack


def test_a_pack_holds_the_finished_results_alone_and_never_replaces_a_folder(sweep, tmp_path):
    copy, unfinished, pack = _pack_with_one_run_unfinished(sweep, tmp_path)
    names = {p.relative_to(pack).parts[-1] for p in pack.rglob("*") if p.is_file()}
    assert names <= {"sweep.json", "job.json", "result.json", "heads.json", "heads_init.json"} and "heads.json" in names
    assert not (pack / "runs" / unfinished.name).exists() and sum(p.stat().st_size for p in pack.rglob("*")) < 2e6
    kept = next((copy / "runs").glob("prism-s1-*"))
    assert (pack / "runs" / kept.name / "result.json").read_bytes() == (kept / "result.json").read_bytes()
    with pytest.raises(PrismError, match="refusing to overwrite"):
        SweepDir(copy).pack(pack)  # an existing pack is never replaced
    with pytest.raises(PrismError, match="inside the sweep folder"):
        SweepDir(copy).pack(copy / "pack")
    proc = subprocess.run([sys.executable, "-m", "prism_lm", "sweep", "pack", str(tmp_path), "--out",
                           str(tmp_path / "p")], capture_output=True, text=True, env=env())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a sweep folder" in proc.stderr


def test_a_pack_committed_where_the_docs_say_keeps_every_file_it_holds():
    """docs/experiments.md commits a pack as benchmarks/results/unfinished-<name>/: git must keep its
    runs (a `runs/` ignore rule once dropped them, leaving a pack of the plan alone)."""
    repo = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    pack = "benchmarks/results/unfinished-example"
    paths = [f"{pack}/sweep.json"] + [f"{pack}/runs/prism-s0-0123456789/{name}" for name in PACKED_FILES]
    proc = subprocess.run(["git", "check-ignore", *paths], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""  # 1: none of them is ignored
    assert subprocess.run(["git", "check-ignore", "-q", "runs/prism-s0"], cwd=repo).returncode == 0  # still elsewhere


@pytest.mark.slow  # trains one run and draws a report (10-20 s); the pack's contents are checked above
def test_a_pack_continues_on_another_machine_and_reports(sweep, tmp_path):
    """The finished runs are skipped, the unfinished one trains there, the report reads all four."""
    path = sweep[0]
    copy, _, pack = _pack_with_one_run_unfinished(sweep, tmp_path)
    lines = []
    assert run_sweep(path, pack, log=lines.append) == 0
    assert lines[0].startswith("[sweep] preparing embedded:150 in " + str(pack))  # data is made again there
    assert lines[1].startswith("[sweep] 4 runs in 1 experiment(s): 3 finished, 1 to run")
    paths = write_report(pack, tmp_path / "r")
    rows = {(r["arm"], r["seed"]): r for r in csv.DictReader(open(paths["csv"], encoding="utf-8"))}
    kept = read_result(next((copy / "runs").glob("prism-s1-*")))["row"]["val_loss_32"]
    assert len(rows) == 4 and float(rows["prism", "1"]["val_loss_32"]) == kept
    assert "loss" in {p.stem.rsplit("_", 1)[-1] for p in (tmp_path / "r" / "figures").glob("*.png")}


@pytest.mark.slow
def test_interrupting_a_sweep_and_running_it_again_continues_exactly(tmp_path):
    path = write_experiment(tmp_path, steps=40)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prism_lm", "sweep", "run", str(path), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("runs/prism-*/train/checkpoints/step-*")):
        time.sleep(0.05)  # wait until the first run has saved a checkpoint, then stop the sweep
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "run the same command again to continue" in output
    assert not list(out.glob("runs/*/result.json"))  # the interrupted run has no result yet
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = {read_result(p)["row"]["arm"]: read_result(p)["row"] for p in (out / "runs").iterdir()}
    # the same file into a new folder, never interrupted: the same numbers
    assert run_sweep(path, tmp_path / "fresh", workers=1, log=lambda _: None) == 0
    fresh = {read_result(p)["row"]["arm"]: read_result(p)["row"] for p in (tmp_path / "fresh" / "runs").iterdir()}
    for arm in ("prism", "gpt"):
        assert resumed[arm]["val_loss_32"] == fresh[arm]["val_loss_32"]
        assert resumed[arm]["grad_norm_max"] == fresh[arm]["grad_norm_max"]


def _job_pids(out: Path) -> list[int]:
    """The live job processes of the sweep folder ``out``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"prism_lm.experiments.job" in cmdline and any(str(out).encode() in a for a in cmdline) and state != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="jobs die with the sweep through PR_SET_PDEATHSIG")
def test_killing_the_sweep_alone_stops_its_jobs_and_an_immediate_rerun_is_exact(tmp_path):
    """kill -9 of the sweep process only (not its jobs' sessions): the jobs save and exit by themselves,
    a rerun started at once waits for them, runs nothing twice, fails nothing, and the one run left
    keeps its one thread: its numbers are bitwise those of an uninterrupted sweep."""
    path = write_experiment(tmp_path, steps=160)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0]").replace(
        "[arms.prism]", "[arms.prism]\nrun = { checkpoint_interval = 20, eval_interval = 40 }").replace(
        "model = { n_layer", "run = { max_iters = 8 }\nmodel = { n_layer"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "prism_lm", "sweep", "run", str(path), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (list(out.glob("runs/gpt-*/result.json"))
                                          and list(out.glob("runs/prism-*/train/checkpoints/step-*"))):
        time.sleep(0.05)
    assert not list(out.glob("runs/prism-*/result.json")), "the long run finished before the kill"
    assert _job_pids(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)  # at once
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "FAILED" not in rerun.stdout and "1 to run" in rerun.stdout
    assert "keep their thread count (1)" in rerun.stdout or len(os.sched_getaffinity(0)) < 2
    assert not _job_pids(out)  # no orphan left running
    prism_log = next(out.glob("runs/prism-*/log.txt")).read_text()
    # the first job stopped (saved and interrupted, or killed by the signal mid-evaluation): it never
    # finished beside the rerun's job, which alone completed the run
    assert prism_log.count("--- started") == 2 and prism_log.count("[job] done") == 1
    assert run_sweep(path, tmp_path / "fresh", workers=2, log=lambda _: None) == 0
    for arm in ("prism", "gpt"):
        resumed = read_result(next(out.glob(f"runs/{arm}-*")))["row"]
        fresh = read_result(next((tmp_path / "fresh").glob(f"runs/{arm}-*")))["row"]
        assert resumed["steps"] == fresh["steps"] == (160 if arm == "prism" else 8)
        assert resumed["val_loss_32"] == fresh["val_loss_32"] and resumed["grad_norm_max"] == fresh["grad_norm_max"]


@pytest.mark.slow
def test_the_submitit_path_runs_the_same_jobs(tmp_path):
    pytest.importorskip("submitit")
    path = write_experiment(tmp_path, steps=4)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    lines = []
    assert run_sweep(path, tmp_path / "out", workers=2, executor="submitit-local", log=lines.append) == 0
    assert sum("done:" in line for line in lines) == 2
    assert (tmp_path / "out" / "submitit").is_dir()
    local = []
    assert run_sweep(path, tmp_path / "local", workers=2, log=local.append) == 0
    for arm in ("prism", "gpt"):
        a = read_result(next((tmp_path / "out" / "runs").glob(f"{arm}-s0-*")))["row"]
        b = read_result(next((tmp_path / "local" / "runs").glob(f"{arm}-s0-*")))["row"]
        assert a["val_loss_32"] == b["val_loss_32"]


def test_a_diverged_run_is_a_result_not_a_failure(tmp_path, monkeypatch):
    import prism_lm
    from prism_lm.experiments.job import run_job
    from prism_lm.experiments.runner import _tasks, _write_job, plan
    from prism_lm.experiments.spec import load_experiments
    from prism_lm.experiments.sweep_dir import SweepDir
    from prism_lm.train import loop

    path = write_experiment(tmp_path, steps=8)
    experiments = load_experiments(path)
    experiments[0].runs = experiments[0].runs[:1]
    (run,) = experiments[0].runs
    from prism_lm.data.prepare import prepare

    prepare(["embedded:150"], tmp_path / "data", val_fraction=0.1, compact_vocab=True, progress=False)
    run.config.data.dir = str(tmp_path / "data")
    (task,) = _tasks(experiments, plan(experiments), SweepDir(tmp_path))
    _write_job(task)
    real_forward = prism_lm.PrismLM.forward

    def poisoned(self, idx, targets=None, **options):
        out = real_forward(self, idx, targets, **options)
        return out._replace(loss=out.loss * float("nan")) if self.training else out

    monkeypatch.setattr(loop.PrismLM, "forward", poisoned)
    assert run_job(task.path) == "diverged"
    result = read_result(task.path)
    assert result["row"]["diverged"] is True and "training loss became nan" in result["diverged"]
    assert "val_loss_32" not in result["row"]  # nothing evaluated from a diverged model


@pytest.mark.slow  # a second sweep (about 6 s); its bucket losses are tested in analysis/test_long_context.py
def test_long_context_columns_come_from_a_sweep_of_models_without_wpe(tmp_path):
    text = write_experiment(tmp_path).read_text(encoding="utf-8")
    text = text.replace("[set.model]\n", "[set.model]\nposition_embedding = \"none\"\n")
    text = text.replace('[arms.gpt]\nbase = "tiny-gpt-cpu"\nmodel = { n_layer',
                        '[arms.gpt]\nbase = "tiny-gpt-cpu"\n'
                        'model = { attention = "gpt-rope", position_embedding = "none", n_layer')
    text = text.replace("head_windows = 4", "head_windows = 0\nlong_contexts = [1, 2]")
    text = text.replace('metric = "val_loss_32"', 'metric = "long_2x_excess"')
    path = tmp_path / "long.toml"
    path.write_text(text, encoding="utf-8")
    assert run_sweep(path, tmp_path / "out", workers=2, log=lambda line: None) == 0
    for run in (tmp_path / "out" / "runs").iterdir():
        row = read_result(run)["row"]
        assert row["long_2x_excess"] == pytest.approx(row["long_2x_bucket1"] - row["long_2x_bucket0"])
        assert row["long_1x_bucket0"] == pytest.approx(row["val_loss_32"], rel=0.2)  # 1x: the training context
        assert 0 < row["long_2x_sink_first4"] <= 1


def test_a_second_file_claiming_the_runs_adds_to_their_record_and_never_relabels_them(sweep, tmp_path):
    """Same experiment name and configs, one arm renamed: refused without --extend (nothing written);
    with it, the plan keeps the first file's record beside the second's, and each run's job keeps the
    labels it was made under, the new claim added."""
    path, out, _ = sweep
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    renamed = tmp_path / "renamed.toml"
    renamed.write_text('name = "two"\n' + path.read_text().replace("[arms.prism]", "[arms.prism-renamed]")
                       .replace('arm = "prism"', 'arm = "prism-renamed"'))
    plan, job = copy / "sweep.json", next((copy / "runs").glob("prism-s0-*")) / "job.json"
    before = plan.read_text(), job.read_text()
    with pytest.raises(PrismError, match="records experiment 'two' from .*two.toml.*--extend"):
        run_sweep(renamed, copy, log=lambda _: None)
    assert (plan.read_text(), job.read_text()) == before
    assert run_sweep(renamed, copy, extend=True, log=lambda _: None) == 0
    experiments = json.loads(plan.read_text())["experiments"]
    assert experiments["two"]["arms"] == ["prism", "gpt"] and experiments["two@2"]["arms"] == ["prism-renamed", "gpt"]
    recorded = json.loads(job.read_text())
    assert recorded["labels"]["arm"] == "prism"  # the label it was made under
    assert [c["arm"] for c in recorded["claims"]] == ["prism", "prism-renamed"]


def test_submitit_refuses_a_sweep_folder_others_may_write_and_says_why_it_matters(tmp_path):
    """submitit unpickles the jobs it finds in the folder: a group- or world-writable one is refused."""
    import os

    pytest.importorskip("submitit")
    path = write_experiment(tmp_path, steps=4)
    shared = tmp_path / "shared-out"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(PrismError, match=r"writable by its group or by others.*chmod go-w"):
        run_sweep(path, shared, executor="submitit-local", log=lambda _: None)
    assert list(shared.iterdir()) == []  # nothing written, nothing run
    from prism_lm.experiments.runner import check_private_folder

    lines = []
    os.chmod(shared, 0o755)
    check_private_folder(shared, lines.append)
    assert lines == [f"[sweep] submitit keeps its jobs as pickles in {shared / 'submitit'}: keep {shared} writable "
                     "by you alone"]
