"""Session-wide set-up: no network, a fixed seed per test, and the expensive things built once per
session (the tiny prepared corpus, a tiny trained run, the bad-input world). They are read-only
for the tests that take them: a test that changes one works on a copy."""

import os

import pytest
import torch

# tests never touch the network: the hub libraries fail fast instead of downloading
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from tests.helpers import bad_input_world, prepare_tiny, trained_tiny_run  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one test process per core (README's `-n 2`): each keeps to one thread, so two processes do not
    # fight over both cores with two threads each
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """The tiny corpus: 150 embedded stories, compact vocabulary, 10% validation."""
    return prepare_tiny(tmp_path_factory.mktemp("corpus") / "d")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A folder with d/ (60 embedded stories) and run/ (a tiny PRISM trained 8 steps, block 64)."""
    return trained_tiny_run(tmp_path_factory.mktemp("trained"), steps=8)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """What the bad-input tables run their commands against (``helpers.bad_input_world``)."""
    return bad_input_world(tmp_path_factory.mktemp("bad"))
