"""Starts `gemma serve` on a free loopback port for the OpenAI-client tests.

Needs the release binary (GEMMA_BIN, default target/release/gemma, or $CARGO_TARGET_DIR/release/gemma) and,
except for the tests on a committed tiny checkpoint (TINY_PALIGEMMA), GEMMA_MODEL (the real model, as for the
Rust tests; `.ci/run` sets it).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The tiny random PaliGemma checkpoint (a folder: config, safetensors, tokenizer) and its 32x32 test images.
TINY_PALIGEMMA = REPO / "tests" / "fixtures" / "tiny" / "paligemma"
TINY_GEMMA3_VISION = REPO / "tests" / "fixtures" / "tiny" / "gemma3_vision"


def gemma_bin():
    if os.environ.get("GEMMA_BIN"):
        return os.environ["GEMMA_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "release" / "gemma")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `gemma serve`: its base URL and process."""

    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    def metric(self, name):
        """A value from /metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    def stop(self, timeout=60):
        """SIGTERM, then the exit code (a graceful shutdown exits 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def start_server(*args, model=None):
    """`gemma serve` on `model` (default: GEMMA_MODEL, the test skipped without it)."""
    model = model or os.environ.get("GEMMA_MODEL")
    if not model:
        pytest.skip("set GEMMA_MODEL to gemma-3-270m-q4_k_m.gguf (scripts/fetch-model.sh) to run the OpenAI-client tests")
    port = free_port()
    cmd = [gemma_bin(), "serve", "-m", str(model), "--port", str(port), "-q", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    server = Server(proc, port)
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(server.url + "/health", timeout=2) as r:
                if json.load(r)["status"] == "ok":
                    return server
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("the server did not become healthy in 120 s")
        time.sleep(0.1)


@contextlib.contextmanager
def running(*args, model=None):
    server = start_server(*args, model=model)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server():
    """The shared server: 8 slots of 2048 positions."""
    s = start_server("--parallel", "8", "--ctx-size", "2048", "--queue", "64")
    yield s
    assert s.stop() == 0, "the server did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
