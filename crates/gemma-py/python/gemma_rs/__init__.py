"""gemma-rs from Python: Google's Gemma models on a CPU, in the engine of the `gemma` command line.

    >>> import gemma_rs
    >>> model = gemma_rs.Model()            # the default model (Gemma 3 270M Q4_K_M), fetched on first use
    >>> print(model)                         # the module tree, as `gemma inspect` and transformers print it
    >>> model.generate("The capital of France is", max_tokens=12, temperature=0)

See `Model` for the rest (chat, streaming, tokenize, logits, images); type hints are in `__init__.pyi`.
"""

from ._native import GemmaError, Model, TextIterator, __version__, default_model_path

__all__ = ["Model", "TextIterator", "GemmaError", "default_model_path", "__version__"]
