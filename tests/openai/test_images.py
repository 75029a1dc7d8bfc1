"""Images through the official `openai` client: `gemma serve` on the committed tiny random PaliGemma
(tests/fixtures/tiny/paligemma) and Gemma 3 with its vision tower (tests/fixtures/tiny/gemma3_vision; neither
needs GEMMA_MODEL), `image_url` content parts with base64 data URLs, and the answers checked against
transformers' greedy ids in the fixtures' expected.json and chat_greedy.json.
"""

import base64
import json

import openai
import pytest
from openai import OpenAI

from conftest import TINY_GEMMA3_VISION, TINY_PALIGEMMA, running

MODEL_ID = "paligemma"


def data_url(name):
    return "data:image/png;base64," + base64.b64encode((TINY_PALIGEMMA / name).read_bytes()).decode()


def decode(ids):
    """The text of `ids` as the server streams it: pieces from tokenizer.json, `▁` as a space, byte pieces
    gathered and decoded as UTF-8 (a lone invalid byte becomes U+FFFD)."""
    t = json.loads((TINY_PALIGEMMA / "tokenizer.json").read_text())
    vocab = t["model"]["vocab"]
    pieces = {i: p[0] for i, p in enumerate(vocab)} if isinstance(vocab, list) else {i: p for p, i in vocab.items()}
    pieces.update({a["id"]: a["content"] for a in t.get("added_tokens", [])})
    out = bytearray()
    for i in ids:
        p = pieces[i]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            out.append(int(p[3:5], 16))
        else:
            out += p.replace("\u2581", " ").encode()
    return out.decode("utf-8", errors="replace")


def test_image_url_part_with_paligemma():
    greedy = json.loads((TINY_PALIGEMMA / "expected.json").read_text())["greedy"]
    want = decode(greedy["generated"])
    with running("--ctx-size", "512", "--parallel", "2", model=TINY_PALIGEMMA) as s:
        c = OpenAI(base_url=s.base_url, api_key="-", max_retries=0, timeout=120)
        image = {"type": "image_url", "image_url": {"url": data_url("image.png"), "detail": "low"}}
        messages = [{"role": "user", "content": [{"type": "text", "text": greedy["text"]}, image]}]
        r = c.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=10, temperature=0)
        assert r.choices[0].message.content == want
        assert r.choices[0].finish_reason == "length"
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(greedy["prompt_ids"]), 10)
        chunks = list(c.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=10, temperature=0, stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want

        # Boxes come as the `detections` extension of the message (the tiny model's answer to `detect`
        # about image_b.png begins with four location tokens).
        detect = [{"role": "user", "content": [{"type": "text", "text": "detect"}, {"type": "image_url", "image_url": {"url": data_url("image_b.png")}}]}]
        r = c.chat.completions.create(model=MODEL_ID, messages=detect, max_tokens=12, temperature=0)
        boxes = r.choices[0].message.model_extra["detections"]
        assert boxes and all(len(b["box"]) == 4 and 0 <= min(b["box"]) and max(b["box"]) <= 32 for b in boxes), boxes

        # The server fetches nothing: a remote URL is a 400 naming the part.
        remote = [{"role": "user", "content": [{"type": "text", "text": "caption en"}, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=MODEL_ID, messages=remote, max_tokens=4)
        assert e.value.body["param"] == "messages[0].content[1].image_url.url"
        assert "data: URL" in e.value.body["message"]


def test_image_url_parts_with_gemma3():
    """Several images in a message and images in earlier turns, as a chat client sends them."""
    cases = json.loads((TINY_GEMMA3_VISION / "chat_greedy.json").read_text())

    def part(c):
        if c["type"] == "image":
            url = "data:image/png;base64," + base64.b64encode((TINY_GEMMA3_VISION / c["path"]).read_bytes()).decode()
            return {"type": "image_url", "image_url": {"url": url}}
        return c

    with running("--ctx-size", "512", "--parallel", "2", model=TINY_GEMMA3_VISION) as s:
        c = OpenAI(base_url=s.base_url, api_key="-", max_retries=0, timeout=120)
        for case in cases:
            messages = [{"role": m["role"], "content": [part(p) for p in m["content"]]} for m in case["messages"]]
            r = c.chat.completions.create(model="gemma3", messages=messages, max_tokens=len(case["generated"]), temperature=0)
            assert r.choices[0].message.content == case["text"]
            assert r.usage.prompt_tokens == len(case["prompt_ids"])
