#!/usr/bin/env bash
# gemma-rs vs llama.cpp, side by side in one run (see scripts/bench_vs_llamacpp.py for what is measured).
# Builds llama.cpp from source through llama-cpp-python (PyPI) into $LLAMA_VENV (default
# ~/.cache/gemma-rs/llama-venv) the first time; that build takes ~10 minutes on 2 cores. The flags are this
# CPU's features spelled out rather than GGML_NATIVE: on this machine kind's Xeon (which reports AMX) the
# native build's AMX path crashes in llama_decode, so AMX is left out; every AVX-512 feature is in.
# Usage: scripts/bench-vs-llamacpp.sh [MODEL] [extra args for bench_vs_llamacpp.py, e.g. --threads 1,2 --reps 5]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LLAMA_VENV:-$HOME/.cache/gemma-rs/llama-venv}"
if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  python3 -m venv "$venv"
  CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX_VNNI=ON}" \
    "$venv/bin/pip" install --no-cache-dir llama-cpp-python
fi
model="${1:-$(scripts/fetch-model.sh)}"
shift || true
cargo build --release -q -p gemma-cli
"$venv/bin/python" scripts/bench_vs_llamacpp.py --model "$model" "$@"
