"""Text in and out of `gemma_rs.Model` against the `gemma` command line on the same file: greedy generation
(`gemma run --temperature 0`), tokenization (`gemma tokenize` / `detokenize`), logits (`gemma logits`), and
streaming against non-streaming. On the real model (GEMMA_MODEL) and on the committed tiny RecurrentGemma
(a recurrent mixer and its own tokenizer.json; runs without GEMMA_MODEL)."""

import numpy as np
import pytest

import gemma_rs
from conftest import TINY, cli, cli_json

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away"]


@pytest.fixture(scope="module")
def tiny():
    return gemma_rs.Model(TINY / "recurrent_gemma", threads=2)


def run_json(path, prompt, *opts):
    return cli_json("run", "-m", path, "-t", "2", "-q", "--json", *opts, prompt)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_text_equals_gemma_run(real, real_path, prompt):
    want = run_json(real_path, prompt, "--temperature", "0", "-n", "32")
    assert real.generate(prompt, max_tokens=32, temperature=0) == want["text"]


def test_sampled_text_and_stop_strings_equal_gemma_run(real, real_path):
    prompt = PROMPTS[2]
    want = run_json(real_path, prompt, "--seed", "7", "-n", "40")
    assert real.generate(prompt, max_tokens=40, seed=7) == want["text"]
    want = run_json(real_path, prompt, "--temperature", "0", "-n", "64", "--stop", ".", "--stop", "\n")
    got = real.generate(prompt, max_tokens=64, temperature=0, stop=[".", "\n"])
    assert got == want["text"] and want["finish_reason"] == "stop"


def test_tiny_recurrent_greedy_equals_gemma_run(tiny):
    for prompt in ["Hello world", "abc def"]:
        want = run_json(TINY / "recurrent_gemma", prompt, "--temperature", "0", "-n", "12")
        assert tiny.generate(prompt, max_tokens=12, temperature=0) == want["text"]


def check_stream(model, prompt, **kw):
    whole = model.generate(prompt, **kw)
    it = model.generate(prompt, stream=True, **kw)
    assert isinstance(it, gemma_rs.TextIterator) and it.finish_reason is None
    pieces = list(it)
    assert "".join(pieces) == whole
    assert all(pieces), "no empty pieces"
    assert it.finish_reason in ("stop", "length")
    return pieces


def test_streaming_equals_non_streaming(real, tiny):
    pieces = check_stream(real, PROMPTS[1], max_tokens=24, temperature=0)
    assert len(pieces) > 5, "streamed piece by piece"
    check_stream(real, PROMPTS[2], max_tokens=24, seed=3)
    check_stream(real, PROMPTS[2], max_tokens=48, temperature=0, stop=["."])
    chat = [{"role": "user", "content": "Name three colors."}]
    assert "".join(real.chat(chat, max_tokens=16, temperature=0, stream=True)) == real.chat(chat, max_tokens=16, temperature=0)
    check_stream(tiny, "Hello", max_tokens=12, temperature=0)


def test_stream_closed_early_stops(real):
    it = real.generate(PROMPTS[0], max_tokens=200, temperature=0, stream=True)
    first = next(it)
    it.close()
    assert first and list(it) == [] and it.finish_reason is None


TEXTS = ["The capital of France is", "<start_of_turn>user\nHi<end_of_turn>\n", "naïve café — 東京 🙂", "  spaces\n\n\ttabs"]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_equals_gemma_tokenize(real, real_path, text):
    ids = real.tokenize(text)
    assert ids == [int(i) for i in cli("tokenize", "-m", real_path, text).strip().split(",")]
    assert real.tokenize(text, add_bos=False) == [int(i) for i in cli("tokenize", "-m", real_path, "--no-bos", text).strip().split(",")]
    assert real.tokenize(text, special=False) == [int(i) for i in cli("tokenize", "-m", real_path, "--no-special", text).strip().split(",")]
    assert real.detokenize(ids) + "\n" == cli("detokenize", "-m", real_path, ",".join(map(str, ids)))
    assert real.detokenize(ids, render_special=True) + "\n" == cli("detokenize", "-m", real_path, "--render-special", ",".join(map(str, ids)))


def test_tiny_tokenize_equals_gemma_tokenize(tiny):
    text = "Hello world, abc def"
    assert tiny.tokenize(text) == [int(i) for i in cli("tokenize", "-m", TINY / "recurrent_gemma", text).strip().split(",")]


def check_logits(model, path, ids):
    got = model.logits(ids)
    assert got.dtype == np.float32 and got.shape == (len(ids), model.vocab_size)
    # The engine's buffer, handed to NumPy without a copy (the array does not own it).
    assert got.flags["C_CONTIGUOUS"] and not got.flags["OWNDATA"]
    want = np.array(cli_json("logits", "--model", path, "-t", "2", "--ids", ",".join(map(str, ids)))["logits"], dtype=np.float32)
    # The same code path (one forward pass, two threads), printed by serde_json with round-trip precision.
    assert np.abs(got - want).max() <= 1e-5
    return got


def test_logits_equal_gemma_logits(real, real_path, tiny):
    ids = real.tokenize("The capital of France is")
    got = check_logits(real, real_path, ids)
    assert real.detokenize([int(got[-1].argmax())]) == real.generate("The capital of France is", max_tokens=1, temperature=0)
    check_logits(tiny, TINY / "recurrent_gemma", tiny.tokenize("Hello world"))
