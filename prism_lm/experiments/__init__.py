"""Experiments: files of arms x grid x seeds (``spec``), their runs (``runner``, ``job``) and the
report with seed-level intervals and verdicts (``report``)."""

from prism_lm.experiments.spec import Experiment, PlannedRun, Verdict, load_experiments

__all__ = ["Experiment", "PlannedRun", "Verdict", "load_experiments"]
