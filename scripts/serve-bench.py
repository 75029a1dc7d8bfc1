#!/usr/bin/env python3
"""Aggregate generation speed of a running `gemma serve`: N concurrent streams against the same N requests
sent one after another, for N in --streams (default 1, 4, 8).

Each request is a greedy /v1/completions of --max-tokens tokens on its own prompt; tokens are counted from
`usage`. Sequential and concurrent runs alternate (--reps times each) so that both see the same machine;
the median of each is reported. Standard library only; loopback addresses only.

    gemma serve --parallel 8 &
    python scripts/serve-bench.py --base-url http://127.0.0.1:8080/v1
"""

import argparse
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [
    "Once upon a time, in a small village,",
    "The history of the Roman Empire begins",
    "def quicksort(items):",
    "The weather today is",
    "In the beginning of the universe,",
    "A good cup of coffee needs",
    "The most important invention of the last century",
    "Dear diary, today I",
]


def complete(base_url, prompt, max_tokens):
    body = json.dumps({"model": "gemma", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(base_url + "/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)["usage"]["completion_tokens"]


def timed(fn):
    t0 = time.perf_counter()
    tokens = fn()
    return tokens / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if urllib.parse.urlparse(a.base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback only")
    streams = [int(s) for s in a.streams.split(",")]
    if not (all(1 <= n <= len(PROMPTS) for n in streams) and 1 <= a.reps <= 10 and 1 <= a.max_tokens <= 1024):
        sys.exit(f"--streams in 1..{len(PROMPTS)}, --reps in 1..10, --max-tokens in 1..1024")
    complete(a.base_url, "warm up", 4)
    rows = []
    for n in streams:
        prompts = PROMPTS[:n]
        seq, conc = [], []
        for _ in range(a.reps):
            seq.append(timed(lambda: sum(complete(a.base_url, p, a.max_tokens) for p in prompts)))
            with ThreadPoolExecutor(n) as ex:
                conc.append(timed(lambda: sum(ex.map(lambda p: complete(a.base_url, p, a.max_tokens), prompts))))
        row = {"streams": n, "sequential_tok_s": statistics.median(seq), "concurrent_tok_s": statistics.median(conc)}
        row["speedup"] = row["concurrent_tok_s"] / row["sequential_tok_s"]
        rows.append(row)
        if not a.json:
            print(
                f"{n} streams: concurrent {row['concurrent_tok_s']:6.1f} tok/s | sequential {row['sequential_tok_s']:6.1f} tok/s"
                f" | x{row['speedup']:.2f}  (medians of {a.reps}; runs {[round(x, 1) for x in conc]} vs {[round(x, 1) for x in seq]})",
                flush=True,
            )
    if a.json:
        print(json.dumps({"max_tokens": a.max_tokens, "reps": a.reps, "rows": rows}))


if __name__ == "__main__":
    main()
