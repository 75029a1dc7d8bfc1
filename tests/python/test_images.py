"""Images through `gemma_rs.Model` on the committed tiny random checkpoints (no GEMMA_MODEL needed): Gemma 3
with its vision tower (tests/fixtures/tiny/gemma3_vision) against transformers' greedy text in expected.json
and chat_greedy.json, an image given as a path, a PIL.Image and a NumPy array; PaliGemma against `gemma run
--image`; `logits(images=...)` against `gemma logits --image`."""

import json

import numpy as np
import pytest

import gemma_rs
from conftest import TINY, cli_json, expected

G3 = TINY / "gemma3_vision"
PALI = TINY / "paligemma"


@pytest.fixture(scope="module")
def g3():
    return gemma_rs.Model(G3, threads=2)


def test_gemma3_image_greedy_equals_transformers(g3):
    want = expected("gemma3_vision")["greedy"]
    n = len(want["generated"])
    image = G3 / "image.png"
    assert g3.has_vision
    assert g3.generate("Describe this image.", images=[image], max_tokens=n, temperature=0) == want["text"]
    assert g3.generate("Describe this image.", images=[str(image)], max_tokens=n, temperature=0, stream=True).__class__ is gemma_rs.TextIterator
    streamed = "".join(g3.generate("Describe this image.", images=[image], max_tokens=n, temperature=0, stream=True))
    assert streamed == want["text"]


def test_image_as_pil_and_ndarray(g3):
    Image = pytest.importorskip("PIL.Image")
    want = expected("gemma3_vision")["greedy"]
    n = len(want["generated"])
    pil = Image.open(G3 / "image.png")
    assert g3.generate("Describe this image.", images=[pil], max_tokens=n, temperature=0) == want["text"]
    array = np.asarray(pil.convert("RGB"))
    assert array.shape[2] == 3 and array.dtype == np.uint8
    assert g3.generate("Describe this image.", images=[array], max_tokens=n, temperature=0) == want["text"]
    with pytest.raises(ValueError, match="uint8"):
        g3.generate("Describe this image.", images=[array.astype(np.float32)], max_tokens=2)
    with pytest.raises(ValueError, match="list of images"):
        g3.generate("Describe this image.", images=G3 / "image.png", max_tokens=2)


def test_gemma3_chat_with_images_equals_transformers(g3):
    for case in json.loads((G3 / "chat_greedy.json").read_text()):
        messages = case["messages"]
        for m in messages:
            for part in m["content"]:
                if part["type"] == "image":
                    part["path"] = str(G3 / part["path"])
        got = g3.chat(messages, max_tokens=len(case["generated"]), temperature=0)
        assert got == case["text"]


def test_paligemma_equals_gemma_run_image():
    model = gemma_rs.Model(PALI, threads=2)
    image = PALI / "image.png"
    want = cli_json("run", "-m", PALI, "-t", "2", "-q", "--json", "--image", image, "--temperature", "0", "-n", "10", "caption en")
    assert model.generate("caption en", images=[image], max_tokens=10, temperature=0) == want["text"]
    with pytest.raises(ValueError, match="no images in a conversation"):
        model.chat([{"role": "user", "content": [{"type": "image", "path": str(image)}, {"type": "text", "text": "hi"}]}])


def test_logits_with_an_image_equal_gemma_logits(g3):
    ids = expected("gemma3_vision")["one_image"]["ids"]
    image = G3 / "image.png"
    got = g3.logits(ids, images=[image])
    want = cli_json("logits", "--model", G3, "-t", "2", "--image", image, "--ids", ",".join(map(str, ids)))["logits"]
    assert got.shape == (len(ids), g3.vocab_size)
    assert np.abs(got - np.array(want, dtype=np.float32)).max() <= 1e-5
    with pytest.raises(ValueError, match="placeholders"):
        g3.logits(ids[:10], images=[image])
