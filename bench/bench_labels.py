"""Classify with many labels: inferq's llama.cpp backend at 2, 20 and 200 labels.

    python -m bench.bench_labels [--rows 8] [--repeats 2]

SmolLM2-135M-Instruct (Q4_1) labels short chat-rendered reviews with label sets of 2,
20 and 200 two-token labels ("very good", "fairly calm", ...). Against each, in the
same run, llama-cpp-python's ``Llama`` doing what a user would write by hand: the
prompt evaluated once per row, its state saved, and every label's tokens evaluated
after the restored state (full-sequence scoring, one eval call per label). Rows/s,
medians of interleaved repeats, one llama.cpp thread unless ``INFERQ_BENCH_THREADS``
says otherwise. ``--sizes 2,20,200,5000`` adds label counts (three-word labels past
200; the loop, one eval per label per row, is not run past 200).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time

import numpy as np
from llama_cpp import Llama

import inference
from bench.common import compare, machine, timed, versions
from inference import GenerateOptions, LoadOptions, Message
from inference.packaged import PACKAGED, fetch

MODEL = "smollm2-135m-instruct"
THREADS = int(os.environ.get("INFERQ_BENCH_THREADS", "1"))
SYSTEM = "What is the tone of this review? Answer with two words."
ADVERBS = ("very", "fairly", "quite", "rather", "slightly", "mostly", "deeply", "barely",
           "truly", "somewhat")
ADJECTIVES = ("good", "bad", "calm", "angry", "happy", "sad", "warm", "cold", "clear",
              "vague", "proud", "tired", "eager", "bored", "kind", "harsh", "fair", "odd",
              "keen", "dull")
NOUNS = ("day", "tone", "mood", "note", "fit", "buy", "start", "end", "deal", "pick",
         "kit", "gift", "idea", "plan", "item", "part", "tool", "case", "look", "feel",
         "sound", "build", "price", "size", "use")
SIZES = (2, 20, 200)
#: Above this many labels the hand-written loop (one eval per label per row) is not run.
BASELINE_UP_TO = 200


def label_set(n: int) -> tuple[str, ...]:
    """n two-token labels ("very good"), or three-word ones ("very good day") past 200."""
    if n <= len(ADVERBS) * len(ADJECTIVES):
        return tuple(f"{a} {b}" for a, b in itertools.islice(
            itertools.product(ADVERBS, ADJECTIVES), n))
    return tuple(f"{a} {b} {c}" for a, b, c in itertools.islice(
        itertools.product(ADVERBS, ADJECTIVES, NOUNS), n))


def reviews(n: int) -> list[str]:
    items = ("kettle", "headset", "desk lamp", "backpack", "blender", "phone case")
    return [f"The {items[i % len(items)]} {'works well' if i % 2 else 'broke quickly'}, "
            f"order {i}." for i in range(n)]


def llama_scores(llm: Llama, prompt: list[int], labels: list[list[int]]) -> list[float]:
    """Each label's log-probability after ``prompt``: the prompt once, then every label
    from its restored state."""
    llm.reset()
    llm.eval(prompt)
    state = llm.save_state()
    first = _log_softmax(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
    out = []
    for ids in labels:
        total = float(first[ids[0]])
        if len(ids) > 1:
            llm.load_state(state)
            llm.eval(ids[:-1])
            for j, token in enumerate(ids[1:]):
                row = np.array(llm.scores[len(prompt) + j], dtype=np.float64)
                total += float(_log_softmax(row)[token])
        out.append(total)
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    shifted = x - x.max()
    return shifted - math.log(float(np.exp(shifted).sum()))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="label counts, comma-separated (up to 5,000)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    path = str(fetch(MODEL))
    model = inference.load_model(path, LoadOptions(backend="llama_cpp", threads=THREADS))
    llm = Llama(path, n_ctx=1024, n_threads=THREADS, n_threads_batch=THREADS,
                logits_all=True, flash_attn=True, verbose=False)
    prompts = [model.render_chat([Message("system", SYSTEM),  # type: ignore[attr-defined]
                                  Message("user", text)]) for text in reviews(args.rows)]
    prompt_ids = [llm.tokenize(p.encode(), add_bos=False, special=True) for p in prompts]
    print(f"Machine: {machine()}; threads: {THREADS} per engine; shared machine")
    print(f"Versions: {versions('llama-cpp-python')}")
    print(f"Model: {PACKAGED[MODEL].about}")
    print(f"\nWorkload: {args.rows} chat-rendered reviews ({min(map(len, prompt_ids))}-"
          f"{max(map(len, prompt_ids))} tokens), label sets of two-token labels "
          f"(\"very good\", \"fairly calm\", ...; three words past 200: \"very good day\"); "
          f"medians of {args.repeats} interleaved repeats after a warm-up; the loop is "
          f"not run past {BASELINE_UP_TO} labels.\n")
    print("| labels | inferq rows/s | Llama, state reuse, rows/s | inferq vs Llama | "
          "largest P difference |")
    print("|---|---|---|---|---|")
    for n in sizes:
        labels = label_set(n)
        options = GenerateOptions(labels=labels)
        ids = [llm.tokenize(label.encode(), add_bos=False, special=False) for label in labels]
        ours_out: list[dict[str, float]] = []
        theirs_out: list[list[float]] = []

        def ours(labels_options: GenerateOptions = options,
                 sink: list[dict[str, float]] = ours_out) -> None:
            sink[:] = [r.label_probs or {} for r in model.classify(prompts, labels_options)]

        def theirs(label_ids: list[list[int]] = ids, sink: list[list[float]] = theirs_out
                   ) -> None:
            sink[:] = [llama_scores(llm, p, label_ids) for p in prompt_ids]

        started = time.perf_counter()
        if n > BASELINE_UP_TO:
            ours()  # warm-up
            a = statistics.median(timed(ours) for _ in range(args.repeats))
            print(f"| {n} | {args.rows / a:.2f} | (not run) | | |", flush=True)
            print(f"repeat {n} labels took {time.perf_counter() - started:.0f} s", flush=True)
            continue
        a, b = compare(ours, theirs, repeats=args.repeats)
        gap = 0.0
        for probs, scores in zip(ours_out, theirs_out, strict=True):
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            total = sum(weights)
            gap = max(gap, max(abs(probs[label] - w / total)
                               for label, w in zip(labels, weights, strict=True)))
        print(f"| {n} | {args.rows / a:.2f} | {args.rows / b:.2f} | {b / a:.2f}x | "
              f"{gap:.3f} |", flush=True)
        print(f"repeat {n} labels took {time.perf_counter() - started:.0f} s", flush=True)
    model.close()


if __name__ == "__main__":
    main()
