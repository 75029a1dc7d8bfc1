"""`gemma serve` driven by the official `openai` Python client, with the real Gemma 3 270M (a base model:
the text is weak, the protocol is what is checked): chat, completions, streaming, stop strings, seeds,
fill-in-the-middle, errors, API keys, a full queue, hang-ups, graceful shutdown and a bounded load test.
"""

import importlib.util
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from conftest import REPO, running

MODEL_ID = "gemma-3-270m-q4_k_m"


def raw_post(url, body, headers=None):
    """POST raw bytes; returns (status, headers, parsed JSON body)."""
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.load(e)


def assert_error_object(body):
    e = body["error"]
    assert set(e) >= {"message", "type", "param", "code"}, body
    assert e["message"]
    return e


def test_models_and_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    with urllib.request.urlopen(server.url + "/health") as r:
        assert json.load(r) == {"status": "ok"}


def test_completion(client):
    r = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=16, temperature=0)
    assert r.object == "text_completion"
    assert r.model == MODEL_ID
    c = r.choices[0]
    assert c.text.strip() and c.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 16, 22)
    # Greedy is deterministic.
    again = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=16, temperature=0)
    assert again.choices[0].text == c.text


def test_chat(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert r.object == "chat.completion"
    m = r.choices[0].message
    assert m.role == "assistant" and isinstance(m.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 10


def test_streaming_matches_whole_response(client):
    whole = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=20, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    whole = client.completions.create(model=MODEL_ID, prompt="def fibonacci(n):", max_tokens=24, temperature=0)
    pieces = list(client.completions.create(model=MODEL_ID, prompt="def fibonacci(n):", max_tokens=24, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stop_strings(client):
    full = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=24, temperature=0).choices[0].text
    assert "." in full
    r = client.completions.create(model=MODEL_ID, prompt="The capital of France is", max_tokens=24, temperature=0, stop=["."])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(".")]


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=12, temperature=1.0, top_p=0.9, seed=seed)
        return r.choices[0].text

    assert sample(7) == sample(7)
    # Extensions pass through extra_body.
    r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=4, extra_body={"top_k": 1, "min_p": 0.1})
    greedy = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=4, temperature=0)
    assert r.choices[0].text == greedy.choices[0].text


def test_fill_in_the_middle_needs_codegemma(client):
    # Gemma 3 270M has no FIM tokens: a clear 400 naming `suffix`.
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))", max_tokens=8)
    assert e.value.status_code == 400
    assert e.value.body["param"] == "suffix"
    assert "<|fim_prefix|>" in e.value.body["message"]


@pytest.mark.parametrize(
    "kwargs, param, code",
    [
        (dict(temperature=5), "temperature", None),
        (dict(top_p=1.5), "top_p", None),
        (dict(presence_penalty=3), "presence_penalty", None),
        (dict(max_tokens=100000), "max_tokens", "context_length_exceeded"),
        (dict(n=3), "n", None),
        (dict(stop=["a", "b", "c", "d", "e"]), "stop", None),
        (dict(extra_body={"top_k": -1}), "top_k", None),
    ],
)
def test_bad_values_are_400(client, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="Hello", **{"max_tokens": 4, **kwargs})
    assert e.value.body["param"] == param
    assert e.value.body["code"] == code


def test_prompt_longer_than_context(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL_ID, prompt="word " * 3000, max_tokens=4)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "word " * 3000}])


def test_malformed_bodies(server):
    url = server.base_url + "/chat/completions"
    for body, param in [
        (b'{"messages": [', None),
        (b'{"model": "x"}', "messages"),
        (b'{"messages": "hi"}', "messages"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "messages[0].content"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens"),
    ]:
        status, _, j = raw_post(url, body)
        assert status == 400, body
        assert assert_error_object(j)["param"] == param, (body, j)
    status, _, j = raw_post(url, b'{"messages": [{"role": "user", "content": "' + b"x" * (2 << 20) + b'"}]}')
    assert status == 413
    assert assert_error_object(j)["code"] == "request_too_large"


def test_api_key():
    with running("--api-key", "sesame", "--ctx-size", "512") as s:
        bad = OpenAI(base_url=s.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        good = OpenAI(base_url=s.base_url, api_key="sesame", max_retries=0)
        assert good.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2).usage.completion_tokens <= 2


def test_full_queue_is_503_and_hangups_cancel():
    with running("--parallel", "1", "--queue", "1", "--ctx-size", "2048") as s:
        c = OpenAI(base_url=s.base_url, api_key="-", max_retries=0, timeout=300)
        holder = c.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=1500, temperature=0, stream=True)
        next(iter(holder))  # it holds the slot
        queued = {}
        t = threading.Thread(target=lambda: queued.setdefault("r", c.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=3)))
        t.start()
        deadline = time.time() + 60
        while s.metric("gemma_queue_depth") < 1:
            assert time.time() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.InternalServerError) as e:
            c.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=3)
        assert e.value.status_code == 503
        assert e.value.response.headers["retry-after"] == "1"
        assert e.value.body["code"] == "server_busy"
        holder.close()  # hang up mid-stream: the slot is freed and the queued request runs
        t.join(120)
        assert queued["r"].usage.completion_tokens <= 3
        assert s.metric("gemma_requests_cancelled_total") == 1
        assert s.metric("gemma_generated_tokens_total") < 1000


def test_sigterm_lets_running_streams_finish():
    with running("--ctx-size", "512", "--shutdown-grace", "60") as s:
        c = OpenAI(base_url=s.base_url, api_key="-", max_retries=0, timeout=300)
        stream = c.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=40, temperature=0, stream=True)
        it = iter(stream)
        first = next(it)
        assert first.choices[0].finish_reason is None
        s.proc.send_signal(signal.SIGTERM)
        rest = list(it)
        assert rest[-1].choices[0].finish_reason == "length"
        assert s.proc.wait(60) == 0
        with pytest.raises(openai.APIConnectionError):
            c.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)


def test_metrics(server, client):
    client.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=2)
    with urllib.request.urlopen(server.url + "/metrics") as r:
        page = r.read().decode()
    for name in [
        'gemma_requests_total{endpoint="/v1/completions",status="200"}',
        "gemma_generated_tokens_total",
        "gemma_queue_depth",
        "gemma_generation_tokens_per_second",
        "gemma_slots 8",
    ]:
        assert name in page, name


def load_script():
    spec = importlib.util.spec_from_file_location("serve_load", Path(REPO) / "scripts" / "serve-load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_load_60_requests_8_at_a_time(server):
    s = load_script().run(server.base_url, requests=60, concurrency=8, seed=1)
    assert s["failed"] == 0, s["failures"]
    assert s["mismatched"] == 0, s["mismatches"]
