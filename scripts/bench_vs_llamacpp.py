#!/usr/bin/env python3
"""gemma-rs against llama.cpp on the same model, machine and run, alternating between the two engines.

Run through scripts/bench-vs-llamacpp.sh, which builds llama.cpp (llama-cpp-python from PyPI, native CPU flags)
into a venv outside the repo. For each thread count and test (pp64, pp512, tg128) it runs llama.cpp, then
`gemma bench --json`, REPS times, alternating, and prints medians and the ratio gemma-rs / llama.cpp, then each
engine's peak resident memory (llama.cpp runs in a child process of its own, context 1024).

With --baseline OTHER_GEMMA_BINARY (e.g. a build of an earlier commit) that binary is measured in the same
alternation and a column gives this build / baseline: a before/after comparison free of the drift between runs.

pp N: evaluate an N-token prompt in one batch from an empty cache (tokens/s).
tg N: evaluate N tokens one at a time after a 1-token prompt (tokens/s), no sampling — llama-bench's definition.
"""
import argparse, json, multiprocessing, os, resource, statistics, subprocess, sys, time

def llamacpp_child(model, threads, tests, reps, q):
    """Runs in a fresh process, so that its peak resident memory is llama.cpp's (plus the interpreter's)."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rates = llamacpp_rates(model, threads, tests, reps)
    q.put((rates, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, base * 1024))

def llamacpp_rates_isolated(model, threads, tests, reps):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=llamacpp_child, args=(model, threads, tests, reps, q))
    p.start()
    out = q.get()
    p.join()
    return out

def llamacpp_rates(model, threads, tests, reps):
    from llama_cpp import Llama
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, n_ubatch=512, verbose=False)
    vocab = llm.n_vocab()
    toks = lambda n: [3 + (i * 2654435761) % (vocab - 3) for i in range(n)]
    def once(test):
        kind, n = test[:2], int(test[2:])
        llm.reset()
        if kind == "pp":
            t = time.perf_counter(); llm.eval(toks(n)); return n / (time.perf_counter() - t)
        ids = toks(n + 1)
        llm.eval(ids[:1])
        t = time.perf_counter()
        for i in range(1, n + 1):
            llm.eval(ids[i:i + 1])
        return n / (time.perf_counter() - t)
    out = {}
    for test in tests:
        once(test)  # warm-up
        out[test] = [once(test) for _ in range(reps)]
    return out

def gemma_rates(gemma, model, threads, tests, reps):
    pp = [t[2:] for t in tests if t.startswith("pp")] or ["0"]
    tg = [t[2:] for t in tests if t.startswith("tg")] or ["0"]
    out, peak = {}, 0
    for _ in range(reps):
        r = subprocess.run([gemma, "bench", "-m", model, "-p", ",".join(pp), "-n", ",".join(tg), "-t", str(threads), "-r", "1", "--json"],
                           check=True, capture_output=True, text=True)
        j = json.loads(r.stdout)
        peak = max(peak, j.get("peak_rss_bytes") or 0)
        for row in j["results"]:
            out.setdefault(row["test"], []).append(row["tokens_per_s"])
    return out, peak

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--gemma", default="target/release/gemma")
    ap.add_argument("--baseline", help="another gemma binary measured in the same run (before/after)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tests", default="pp64,pp512,tg128")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two engines")
    a = ap.parse_args()
    tests = a.tests.split(",")
    print(f"model: {a.model}")
    extra = f"{'baseline tok/s':>18}{'vs base':>9}" if a.baseline else ""
    print(f"{'test':<8}{'threads':>8}{'llama.cpp tok/s':>18}{'gemma-rs tok/s':>18}{'ratio':>8}{extra}")
    for t in [int(x) for x in a.threads.split(",")]:
        L, G, B = {}, {}, {}
        rss_l = rss_g = base = 0
        for _ in range(a.rounds):
            rates, peak, base = llamacpp_rates_isolated(a.model, t, tests, a.reps)
            rss_l = max(rss_l, peak)
            for k, v in rates.items(): L.setdefault(k, []).extend(v)
            rates, peak = gemma_rates(a.gemma, a.model, t, tests, a.reps)
            rss_g = max(rss_g, peak)
            for k, v in rates.items(): G.setdefault(k, []).extend(v)
            if a.baseline:
                rates, _ = gemma_rates(a.baseline, a.model, t, tests, a.reps)
                for k, v in rates.items(): B.setdefault(k, []).extend(v)
        for test in tests:
            l, g = statistics.median(L[test]), statistics.median(G[test])
            more = ""
            if a.baseline:
                b = statistics.median(B[test])
                more = f"{b:>18.1f}{g / b:>9.3f}"
            print(f"{test:<8}{t:>8}{l:>18.1f}{g:>18.1f}{g / l:>8.2f}{more}", flush=True)
        mib = 1 << 20
        print(f"{'peak RSS':<8}{t:>8}{rss_l / mib:>14.0f} MiB{rss_g / mib:>14.0f} MiB{rss_g / rss_l:>8.2f}"
              f"   (llama.cpp's process includes the Python interpreter: {base / mib:.0f} MiB before loading)", flush=True)

if __name__ == "__main__":
    main()
