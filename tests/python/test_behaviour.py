"""What a Python user expects of `gemma_rs.Model` besides its answers: `print(model)` is `gemma inspect`'s
tree, exceptions of the right class with the engine's message, the GIL released while the engine computes,
and Ctrl-C turning into KeyboardInterrupt in the middle of a generation."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import gemma_rs
from conftest import TINY, cli


@pytest.mark.parametrize("name", ["gemma3_vision", "recurrent_gemma", "paligemma"])
def test_print_model_equals_gemma_inspect_tiny(name):
    check_inspect(gemma_rs.Model(TINY / name, threads=1), TINY / name)


def test_print_model_equals_gemma_inspect_real(real, real_path):
    check_inspect(real, real_path)
    assert str(real).startswith("Gemma3ForCausalLM(")


def check_inspect(model, path):
    out = cli("inspect", "--model", path)
    assert str(model) == repr(model)
    assert out == f"{model}\n\n{model.summary()}"
    assert model.summary().startswith("Total parameters: ")
    assert cli("inspect", "--model", path, "--depth", "1").endswith(model.summary(depth=1))


def test_missing_file_is_file_not_found(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    with pytest.raises(FileNotFoundError, match="no such file or folder") as e:
        gemma_rs.Model(missing)
    assert e.value.filename == str(missing) and e.value.errno == 2
    with pytest.raises(FileNotFoundError):
        gemma_rs.Model(TINY / "gemma3_vision", mmproj=missing)
    model = gemma_rs.Model(TINY / "gemma3_vision", threads=1)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        model.generate("Describe this image.", images=[tmp_path / "missing.png"], max_tokens=2)


def test_bad_arguments_are_value_errors():
    model = gemma_rs.Model(TINY / "recurrent_gemma", threads=1, ctx=64)
    with pytest.raises(ValueError, match="temperature"):
        model.generate("Hi", temperature=-1)
    with pytest.raises(ValueError, match="top-p"):
        model.chat([{"role": "user", "content": "Hi"}], top_p=1.5)
    with pytest.raises(ValueError, match="threads"):
        gemma_rs.Model(TINY / "recurrent_gemma", threads=0)
    with pytest.raises(ValueError, match="ctx"):
        gemma_rs.Model(TINY / "recurrent_gemma", ctx=1)
    with pytest.raises(ValueError, match="context 64"):
        model.generate("Hello world " * 64)
    with pytest.raises(ValueError, match="empty"):
        model.logits([])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([2, 10**6])
    with pytest.raises(ValueError, match="no image encoder"):
        model.generate("Hi", images=[TINY / "paligemma" / "image.png"])
    with pytest.raises(ValueError, match="role"):
        model.chat([{"content": "Hi"}])
    with pytest.raises(ValueError, match="not an image"):
        gemma_rs.Model(TINY / "gemma3_vision", threads=1).generate("x", images=[TINY / "gemma3_vision" / "config.json"])


def test_unreadable_checkpoint_is_gemma_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(gemma_rs.GemmaError, match="bad.gguf"):
        gemma_rs.Model(bad)
    assert issubclass(gemma_rs.GemmaError, Exception)


def test_gil_released_while_generating(real_path):
    """While a thread generates, the main thread keeps running Python: the longest pause it sees is a small
    part of the generation's time (with the GIL held it would be all of it). Two models generating from two
    threads at once give what each gives alone."""
    a, b = gemma_rs.Model(real_path, threads=1), gemma_rs.Model(real_path, threads=1)
    alone = a.generate("Once upon a time", max_tokens=48, temperature=0)
    results = {}

    def work(name, model):
        results[name] = model.generate("Once upon a time", max_tokens=48, temperature=0)

    t = threading.Thread(target=work, args=("a", a))
    t0 = time.perf_counter()
    t.start()
    last, longest = time.perf_counter(), 0.0
    while t.is_alive():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    elapsed = time.perf_counter() - t0
    assert elapsed > 0.2, "the generation was too short to tell"
    assert longest < elapsed / 3, f"the main thread stood still for {longest:.3f} s of {elapsed:.3f} s"
    threads = [threading.Thread(target=work, args=(n, m)) for n, m in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": alone, "b": alone}


CHILD = """
import sys, time, gemma_rs
model = gemma_rs.Model(sys.argv[1], threads=1)
stream = sys.argv[2] == "stream"
print("ready", flush=True)
t0 = time.perf_counter()
try:
    # Long enough (about a minute) that only an interruption ends it within seconds.
    out = model.generate("Once upon a time", max_tokens=4000, temperature=0.8, seed=1, stream=stream)
    if stream:
        for _ in out:
            pass
    print("finished", time.perf_counter() - t0, flush=True)
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - t0, flush=True)
"""


@pytest.mark.parametrize("mode", ["text", "stream"])
def test_ctrl_c_interrupts_generation(real_path, mode):
    p = subprocess.Popen([sys.executable, "-c", CHILD, real_path, mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    word, seconds = out.split()
    assert word == "interrupted", out
    assert float(seconds) < 10
