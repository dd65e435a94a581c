"""llama.cpp backend vs the loop a user writes with llama-cpp-python's high-level API.

    python -m bench.bench_llama

Same model file, same prompts, same thread count, in one run. Prints a markdown
table of medians and ratios (ours / theirs speed-up).
"""

from __future__ import annotations

import json
import sys

from llama_cpp import Llama

import inference
from bench.common import THREADS, bench_model, compare, machine, versions
from inference import GenerateOptions, LoadOptions

# 127 characters + BOS = a 128-token instruction under the byte-level vocabulary.
PREFIX = ("You are a careful annotator. Read the customer review below and answer with one "
          "word, positive or negative, nothing else. Review: ")[:127].ljust(127)
REVIEWS = ["great product!!", "awful, broke...", "works as stated", "meh, it is fine",
           "never again, no", "love it so much", "too expensive!!", "arrived broken."]


def shared_prefix_prompts(n: int = 64) -> list[str]:
    return [PREFIX + REVIEWS[i % len(REVIEWS)][:14] + str(i % 10) for i in range(n)]


def independent_prompts(n: int = 64) -> list[str]:
    # 32 tokens each, no common prefix beyond BOS.
    return [(f"{i:03d} " + REVIEWS[i % len(REVIEWS)] * 3)[:31] for i in range(n)]


def main() -> None:
    model_files = bench_model()
    gguf = str(model_files.gguf_path)
    ours = inference.load_model(gguf, LoadOptions(backend="llama_cpp", threads=THREADS))
    theirs = Llama(model_path=gguf, n_ctx=2048, n_batch=512, n_threads=THREADS,
                   n_threads_batch=THREADS, verbose=False)

    def user_loop_classify(prompts: list[str]) -> list[str]:
        # What a user writes: one completion of one token per prompt. Llama keeps
        # the previous prompt's KV and only evaluates what differs, so shared
        # prefixes already help this loop.
        return [theirs.create_completion(p, max_tokens=1, temperature=0.0, top_k=1)["choices"][0]
                ["text"] for p in prompts]

    def fresh_loop_classify(prompts: list[str]) -> list[str]:
        # The same loop when nothing carries over between prompts (llm.reset()):
        # every prompt is evaluated in full.
        out = []
        for p in prompts:
            theirs.reset()
            out.append(theirs.create_completion(p, max_tokens=1, temperature=0.0, top_k=1)
                       ["choices"][0]["text"])
        return out

    def user_loop_generate(prompts: list[str], n: int) -> list[str]:
        return [theirs.create_completion(p, max_tokens=n, temperature=0.0, top_k=1, top_p=1.0,
                                         min_p=0.0, repeat_penalty=1.0)["choices"][0]["text"]
                for p in prompts]

    rows = []
    for name, prompts in (("classify, 64 prompts sharing a 128-token prefix",
                           shared_prefix_prompts()),
                          ("classify, 64 independent 32-token prompts", independent_prompts())):
        tokens = sum(r.prompt_tokens for r in ours.classify(prompts))
        for baseline, loop in (("high-level loop", user_loop_classify),
                               ("high-level loop, reset per prompt", fresh_loop_classify)):
            a, b = compare(lambda p=prompts: ours.classify(p), lambda p=prompts, f=loop: f(p))
            rows.append((name, baseline, f"{tokens / a:,.0f} prompt tok/s",
                         f"{tokens / b:,.0f} prompt tok/s", b / a))

    gen_prompts = [f"Story {i}: once upon a time" for i in range(8)]
    opts = GenerateOptions(max_tokens=32)
    a, b = compare(lambda: ours.batch_generate(gen_prompts, opts),
                   lambda: user_loop_generate(gen_prompts, 32))
    generated = sum(len(r.tokens) for r in ours.batch_generate(gen_prompts, opts))
    rows.append(("batch_generate, 8 prompts x 32 tokens", "sequential high-level completions",
                 f"{generated / a:,.0f} tok/s",
                 f"{generated / b:,.0f} tok/s", b / a))

    print(f"Machine: {machine()}; threads: {THREADS}")
    print(f"Versions: {versions('llama-cpp-python', 'inferq')}")
    print(f"Model: {model_files.config.parameter_count / 1e6:.0f}M-parameter llama, f32, "
          "random weights (inference.testing.BENCH_CONFIG)\n")
    print("| workload | baseline (llama-cpp-python) | inferq | baseline | speed-up |")
    print("|---|---|---|---|---|")
    for name, baseline, mine, theirs_rate, ratio in rows:
        print(f"| {name} | {baseline} | {mine} | {theirs_rate} | {ratio:.2f}x |")
    if "--json" in sys.argv:
        print(json.dumps([{"workload": r[0], "baseline": r[1], "speedup": r[4]} for r in rows]))
    ours.close()
    theirs.close()


if __name__ == "__main__":
    main()
