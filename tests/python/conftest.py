"""Shared by the tests of the `gemma_rs` Python module: the `gemma` binary its answers are compared with, the
committed tiny checkpoints, and the real model (GEMMA_MODEL, as for the Rust tests; tests that need it skip
without it).

Needs the module installed (`.ci/run` builds the wheel with maturin and installs it into a venv outside the
repository) and the release binary (GEMMA_BIN, default target/release/gemma, or $CARGO_TARGET_DIR/release/gemma).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny"


def gemma_bin():
    if os.environ.get("GEMMA_BIN"):
        return os.environ["GEMMA_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "release" / "gemma")


def cli(*args):
    """Run `gemma ARGS` and return its stdout (failing the test on a non-zero exit)."""
    p = subprocess.run([gemma_bin(), *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, f"gemma {' '.join(map(str, args))}: {p.stderr}"
    return p.stdout


def cli_json(*args):
    return json.loads(cli(*args))


def expected(name):
    return json.loads((TINY / name / "expected.json").read_text())


@pytest.fixture(scope="session")
def real_path():
    path = os.environ.get("GEMMA_MODEL")
    if not path:
        pytest.skip("set GEMMA_MODEL to gemma-3-270m-q4_k_m.gguf (scripts/fetch-model.sh) for the real-model tests")
    return path


@pytest.fixture(scope="session")
def real(real_path):
    """The real model, loaded once, 2 threads (the CLI is run with the same)."""
    import gemma_rs

    return gemma_rs.Model(real_path, threads=2)
