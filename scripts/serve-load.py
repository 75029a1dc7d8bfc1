#!/usr/bin/env python3
"""Bounded load test of a running `gemma serve`, through the official `openai` client.

Sends REQUESTS requests, CONCURRENCY at a time, mixing chat and completions, streaming and not, all with
greedy sampling. Each distinct request is first run alone; every response under load must then be exactly
that reference (text, finish_reason, token count): batching must not change greedy results, and no output
may be lost or given to the wrong request. Prints p50/p99 latency and throughput; exits non-zero on any
failed or mismatched request.

    gemma serve --parallel 8 &
    python scripts/serve-load.py --base-url http://127.0.0.1:8080/v1 --requests 500 --concurrency 8

Needs `pip install openai`. Only loopback addresses are accepted: this is a test of our own server.
"""

import argparse
import random
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "In 1969, astronauts",
    "A recipe for pancakes: first,",
    "The quick brown fox",
    "import numpy as np\n\n",
    "Water boils at",
    "My favourite book is",
    "The largest planet in the solar system",
    "To be or not to be,",
    "SELECT name FROM users WHERE",
    "The mitochondria is",
    "Dear Sir or Madam,",
    "Photosynthesis converts",
]


def specs():
    """The distinct requests: (kind, prompt, max_tokens)."""
    out = []
    for i, p in enumerate(PROMPTS):
        out.append(("chat" if i % 2 else "completion", p, 6 + 6 * (i % 3)))
    return out


def call(client, spec, stream):
    """Run one request; returns (text, finish_reason, completion_tokens)."""
    kind, prompt, max_tokens = spec
    common = dict(model="gemma", max_tokens=max_tokens, temperature=0)
    if stream:
        common["stream"] = True
        common["stream_options"] = {"include_usage": True}
    if kind == "chat":
        r = client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)
    else:
        r = client.completions.create(prompt=prompt, **common)
    if not stream:
        c = r.choices[0]
        text = c.message.content if kind == "chat" else c.text
        return text, c.finish_reason, r.usage.completion_tokens
    text, finish, tokens = [], None, None
    for chunk in r:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for c in chunk.choices:
            piece = c.delta.content if kind == "chat" else c.text
            text.append(piece or "")
            finish = c.finish_reason or finish
    return "".join(text), finish, tokens


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def run(base_url, requests=60, concurrency=8, api_key="unused", seed=0, log=print):
    """The load test; returns a summary dict (failures and mismatches listed)."""
    host = urllib.parse.urlparse(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load-test {host}: loopback only")
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
    distinct = specs()
    t0 = time.time()
    refs = [call(client, s, stream=False) for s in distinct]
    log(f"references: {len(refs)} requests run alone in {time.time() - t0:.1f} s")

    rng = random.Random(seed)
    plan = [(rng.randrange(len(distinct)), rng.random() < 0.5) for _ in range(requests)]

    def one(item):
        idx, stream = item
        start = time.time()
        try:
            got = call(client, distinct[idx], stream)
            err = None
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            got, err = None, f"{type(e).__name__}: {e}"
        return idx, stream, got, err, time.time() - start

    t0 = time.time()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, plan))
    wall = time.time() - t0

    failures = [(i, err) for i, (_, _, _, err, _) in enumerate(results) if err]
    mismatches = [
        (i, idx, stream, got, refs[idx]) for i, (idx, stream, got, err, _) in enumerate(results) if not err and got != refs[idx]
    ]
    latencies = [r[4] for r in results if not r[3]]
    tokens = sum(r[2][2] for r in results if not r[3])
    summary = {
        "requests": requests,
        "concurrency": concurrency,
        "streaming": sum(1 for _, s in plan if s),
        "failed": len(failures),
        "mismatched": len(mismatches),
        "wall_s": wall,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "requests_per_s": len(latencies) / wall,
        "tokens_per_s": tokens / wall,
        "completion_tokens": tokens,
        "failures": failures[:5],
        "mismatches": mismatches[:5],
    }
    log(
        f"{requests} requests ({summary['streaming']} streaming), {concurrency} at a time: "
        f"{len(failures)} failed, {len(mismatches)} mismatched; {wall:.1f} s; latency p50 {summary['p50_s']:.2f} s, "
        f"p99 {summary['p99_s']:.2f} s; {summary['requests_per_s']:.2f} req/s, {summary['tokens_per_s']:.1f} generated tok/s"
    )
    for f in failures[:5]:
        log(f"failed: {f}")
    for m in mismatches[:5]:
        log(f"mismatch: request {m[0]} (spec {m[1]}, stream {m[2]}): got {m[3]!r}, alone {m[4]!r}")
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--api-key", default="unused")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not (1 <= a.requests <= 10000 and 1 <= a.concurrency <= 64):
        raise SystemExit("--requests must be in 1..10000 and --concurrency in 1..64")
    s = run(a.base_url, a.requests, a.concurrency, a.api_key, a.seed)
    sys.exit(1 if s["failed"] or s["mismatched"] else 0)


if __name__ == "__main__":
    main()
