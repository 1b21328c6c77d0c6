"""Property-based checks (Hypothesis) that keep bad input a one-line error: the config loader, the
experiment-file loader and every subcommand's options take generated values (non-finite, huge,
negative, of the wrong type, unicode, empty) and either run cleanly or stop with one ``error:`` line
and a non-zero status, never a traceback. A bounded number of examples runs by default; the ``slow``
twins run ten times as many."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_lm.cli import build_parser, main
from prism_lm.config import TrainConfig, flatten, load_train_config, to_dict
from prism_lm.errors import PrismError
from prism_lm.experiments.spec import load_experiments
from tests.helpers import TWO_ARMS

EXAMPLES = 40
# values a user may type: numbers at and past every edge, words, unicode, nothing, TOML of other types
NASTY = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-1", "0", "-0.0", "1e-400", str(2**63), str(2**64),
                     str(-2**63 - 1), "10" * 30, "", " ", "true", "false", "[]", "[1, 2]", "{}", "{a = 1}", '"pi"',
                     "pi", "π", "ünï", "1/0", "3/2", "0x10", "1_000", "None", "null", '"', "'", "\\", "--", "-h"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
CONFIG_KEYS = sorted(flatten(to_dict(TrainConfig())))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_SLOW = settings(max_examples=10 * EXAMPLES, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(exc: PrismError) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


def _check_config(key: str, value: str) -> None:
    try:
        load_train_config(None, [f"{key}={value}"])
    except PrismError as exc:
        _one_line(exc)


@FUZZ
@given(key=st.sampled_from(CONFIG_KEYS + ["model.nope", "nope.key", "model", "model.prism", "model.prism.nope"]),
       value=NASTY)
def test_the_config_loader_refuses_in_one_line_or_loads(key, value):
    _check_config(key, value)


@pytest.mark.slow
@FUZZ_SLOW
@given(key=st.sampled_from(CONFIG_KEYS), value=NASTY)
def test_the_config_loader_refuses_in_one_line_or_loads_many(key, value):
    _check_config(key, value)


# places of the two-arm experiment file where a generated TOML value goes (extends and ladder included)
EXPERIMENT_SLOTS = {
    "seeds": 'seeds = {}', "min_seeds": "min_seeds = {}", "data": "data = {}", "extends": "extends = {}",
    "contexts": "[evaluate]\ncontexts = {}", "head_windows": "[evaluate]\nhead_windows = {}",
    "long_contexts": "[evaluate]\nlong_contexts = {}", "margin": "[[verdicts]]\nclaim = 'c'\nmetric = 'val_loss_32'\n"
    "arm = 'prism'\nbaseline = 'gpt'\ntest = 'equivalence'\nmargin = {}",
    "tune": "[tune]\nseeds = [9]\nmetric = 'val_loss_32'\ngrid = {{ 'optim.lr' = {} }}",
    "ladder": "[ladder]\narm = 'prism'\nbaseline = 'gpt'\nmetric = 'val_loss_32'\npoints = {}",
    "grid": "[grid]\n'model.prism.lambda_start' = {}", "set": "[set.optim]\nlr = {}",
}
TOML_VALUES = st.one_of(NASTY, st.sampled_from(["[1.0, 2.0]", "[{ 'run.max_iters' = 8 }, { 'run.max_iters' = 8 }]",
                                                "[[1]]", "'../../../etc/passwd'", "'two.toml'", "1e400"]))


def _check_experiment(slot: str, value: str) -> None:
    template = EXPERIMENT_SLOTS[slot]
    head, _, tail = TWO_ARMS.format(steps=8).partition("[set.model]")
    text = (head + template.format(value) + "\n[set.model]" + tail) if "[" not in template.split("\n")[0] \
        else TWO_ARMS.format(steps=8) + "\n" + template.format(value) + "\n"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_experiments(path)
        except PrismError as exc:
            _one_line(exc)


@FUZZ
@given(slot=st.sampled_from(sorted(EXPERIMENT_SLOTS)), value=TOML_VALUES)
def test_the_experiment_loader_refuses_in_one_line_or_loads(slot, value):
    _check_experiment(slot, value)


@pytest.mark.slow
@FUZZ_SLOW
@given(slot=st.sampled_from(sorted(EXPERIMENT_SLOTS)), value=TOML_VALUES)
def test_the_experiment_loader_refuses_in_one_line_or_loads_many(slot, value):
    _check_experiment(slot, value)


def _commands(parser: argparse.ArgumentParser, prefix: tuple = ()) -> dict[tuple, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    out.update(_commands(child, (*prefix, name)))
                else:
                    out[(*prefix, name)] = child
    return out


COMMANDS = {cmd: p for cmd, p in _commands(build_parser()).items() if cmd != ("demo",)}  # demo --out X would run
# every option that takes a value, by command (the flags and --help aside)
OPTIONS = sorted((cmd, a.option_strings[0]) for cmd, p in COMMANDS.items() for a in p._actions
                 if a.option_strings and a.nargs != 0 and a.option_strings[0] != "--help")


def _argv(cmd: tuple, option: str, value: str, missing: str) -> list[str]:
    """The command with its positional arguments pointing at nothing, and the one fuzzed option."""
    parser = COMMANDS[cmd]
    positionals = [a for a in parser._actions if not a.option_strings]  # optional ones too: no default config
    required = [a.option_strings[0] for a in parser._actions if a.option_strings and a.required and
                a.option_strings[0] != option]
    argv = [*cmd, *[missing] * len(positionals)]
    for flag in required:
        argv += [flag, missing]
    return [*argv, option, value]


def _check_command(cmd: tuple, option: str, value: str, capsys) -> None:
    with tempfile.TemporaryDirectory() as folder:
        missing = str(Path(folder) / "missing")
        status = main(_argv(cmd, option, value, missing))
        err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status != 0 and len(errors) == 1, (status, err)


@pytest.mark.parametrize("cmd,option", OPTIONS, ids=[f"{' '.join(c)} {o}" for c, o in OPTIONS])
def test_every_option_of_every_command_refuses_bad_values_in_one_line(cmd, option, capsys):
    """Each option once, with the values that broke something before: non-finite, huge, negative, words."""
    for value in ("nan", "inf", "1e400", str(10**20), "-1", "ünï", ""):
        _check_command(cmd, option, value, capsys)


@FUZZ
@given(pick=st.sampled_from(OPTIONS), value=NASTY)
def test_generated_values_for_any_option_are_one_line_errors(pick, value, capsys):
    _check_command(*pick, value, capsys)


@pytest.mark.slow
@FUZZ_SLOW
@given(pick=st.sampled_from(OPTIONS), value=NASTY)
def test_generated_values_for_any_option_are_one_line_errors_many(pick, value, capsys):
    _check_command(*pick, value, capsys)
