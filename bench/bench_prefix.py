"""A templated classify job: inferq's kept prefix against llama.cpp's warm ``llama-server``.

    python -m bench.bench_prefix [--chunks 8] [--rows 48] [--repeats 3]

A job of ``--chunks`` chunks of ``--rows`` reviews, every prompt the SmolLM2 chat
rendering of one long labelling instruction (the system message, about 440 tokens)
and one short review; labels ``positive``/``negative``. Three ways to run it, timed
in the same run, interleaved, every one warm (one chunk of other reviews first):

- inferq's llama.cpp backend, ``classify`` once per chunk, with the prefix cache
  (the instruction's KV cells kept between calls);
- the same with the cache off (``prefix_cache_tokens=-1``): the instruction decoded
  once per call and shared by the call's rows;
- llama.cpp's own ``llama-server -np 8`` (from ``bench/build_llama_tools``), each
  row one ``/completion`` request (``n_predict`` 1, ``n_probs`` 20, prompt cache on:
  each slot keeps its last prompt, so the instruction is not computed again), eight
  requests in flight. The server has no prompt logprobs; the labels' probabilities
  are read from the top 20 of the first generated token, renormalised over the two
  labels (a label outside the top 20 counts as absent).

One llama.cpp thread in every engine unless ``INFERQ_BENCH_THREADS`` says otherwise
(see bench_real: on a shared 2-core machine two threads swing timings by 10x).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import llama_cpp

import inference
from bench.bench_real import TOOLS
from bench.common import machine, versions
from inference import GenerateOptions, LoadOptions, TextModel
from inference.packaged import PACKAGED, fetch
from inference.types import Message

MODEL = "smollm2-135m-instruct"
LABELS = ("positive", "negative")
THREADS = int(os.environ.get("INFERQ_BENCH_THREADS", "1"))
SERVER_SLOTS = 8
SERVER_TOP = 20  #: n_probs asked of the server

INSTRUCTION = """You label customer reviews for a shop's quality team. Read the whole \
review before you decide, and answer with exactly one word: positive or negative.

Guidelines.
1. A review is positive when the customer is, on balance, satisfied with the product \
they received: it works as described, it arrived in good condition, it is worth its \
price, or the customer says they would buy it again or recommend it to a friend.
2. A review is negative when the customer is, on balance, dissatisfied: the product \
broke, stopped working, arrived damaged or late, did not match its description or \
photos, was missing parts, was too hard to set up, or the customer asked for a refund \
or a replacement.
3. Mixed reviews are labelled by their conclusion. "The strap is a bit short but I love \
it" is positive; "Looks nice but it broke after two days" is negative.
4. Complaints about delivery alone (a late courier, a damaged box with an intact \
product) do not make a review negative when the product itself pleases the customer.
5. Sarcasm counts as what it means, not what it says: "Great, another charger that \
lasts a week" is negative.
6. Ignore the star rating, the customer's name, order numbers and any text that \
quotes the product description; judge only the customer's own words.
7. Do not guess from the product category. A cheap cable can get a positive review \
and an expensive blender a negative one.
8. When the customer compares the product with an earlier one, label the review by \
what they think of the product they bought now.

Examples.
Review: This kettle boils quickly and switches off by itself. Label: positive
Review: The headset crackles in the left ear and support never answered. Label: negative
Review: Took a month to arrive, but the lamp is lovely and bright. Label: positive
Review: Nice colour, shame the zip came off on the first trip. Label: negative

Answer with one word: positive or negative."""

PRODUCTS = ("kettle", "headset", "desk lamp", "backpack", "blender", "phone case", "keyboard",
            "tent", "toaster", "drill", "jacket", "monitor")
POSITIVE = ("works perfectly and arrived early", "is sturdy, quiet and well made",
            "exceeded my expectations", "is excellent value for the money",
            "was easy to set up and looks great", "is the best I have owned")
NEGATIVE = ("broke after a week", "is flimsy and noisy", "stopped working on day two",
            "arrived damaged and the refund took a month", "is nothing like the photos",
            "was missing parts and support ignored me")


def review(k: int) -> str:
    """The ``k``-th review, distinct for every ``k`` (an order number at the end)."""
    pool = POSITIVE if k % 2 == 0 else NEGATIVE
    product = PRODUCTS[(k // 2) % len(PRODUCTS)]
    clause = pool[(k // (2 * len(PRODUCTS))) % len(pool)]
    return f"This {product} {clause} (order {1000 + k})."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``llama-server`` on a free loopback port; ``score`` labels one prompt."""

    def __init__(self, binary: Path, model: str, label_ids: dict[str, int]) -> None:
        self.port = _free_port()
        self.label_ids = label_ids
        self.command = [str(binary), "-m", model, "-c", str(1024 * SERVER_SLOTS),
                        "-np", str(SERVER_SLOTS), "-t", str(THREADS), "-tb", str(THREADS),
                        "-ngl", "0", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"llama-server did not start: {' '.join(self.command)}")
            time.sleep(0.2)
        self.pool = ThreadPoolExecutor(max_workers=SERVER_SLOTS)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as resp:
            return json.load(resp)

    def tokens(self, prompt: str) -> list[int]:
        found: list[int] = self._post("/tokenize", {"content": prompt,
                                                    "add_special": True})["tokens"]
        return found

    def score(self, prompt: str) -> dict[str, float]:
        """P(label) over the labels, from the top ``SERVER_TOP`` of the first token."""
        answer = self._post("/completion", {
            "prompt": prompt, "n_predict": 1, "n_probs": SERVER_TOP, "temperature": 0.0,
            "cache_prompt": True})
        top = answer["completion_probabilities"][0]["top_logprobs"]
        by_id = {entry["id"]: entry["logprob"] for entry in top}
        found = {name: by_id[i] for name, i in self.label_ids.items() if i in by_id}
        if not found:
            return {}
        peak = max(found.values())
        norm = sum(math.exp(v - peak) for v in found.values())
        return {name: math.exp(found.get(name, -math.inf) - peak) / norm
                for name in self.label_ids}

    def classify(self, prompts: list[str]) -> list[dict[str, float]]:
        return list(self.pool.map(self.score, prompts))

    def close(self) -> None:
        if getattr(self, "pool", None):
            self.pool.shutdown()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_job(model: TextModel, chunks: list[list[str]],
            kept: list[int] | None = None) -> list[dict[str, float]]:
    """Every chunk through one classify call, as a worker runs a job's chunks; appends
    to ``kept`` the prompt tokens the job took from kept prefixes."""
    opts = GenerateOptions(labels=LABELS)
    out, tokens = [], 0
    for prompts in chunks:
        out += [r.label_probs or {} for r in model.classify(prompts, opts)]
        tokens += model.cached_prefix_tokens  # type: ignore[attr-defined]
    if kept is not None:
        kept.append(tokens)
    return out


def _label(probs: dict[str, float]) -> str | None:
    return max(probs, key=probs.__getitem__) if probs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--rows", type=int, default=48, help="rows per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    path = str(fetch(MODEL))
    cached = inference.load_model(path, LoadOptions(backend="llama_cpp", threads=THREADS))
    plain = inference.load_model(path, LoadOptions(backend="llama_cpp", threads=THREADS,
                                                   prefix_cache_tokens=-1))

    def render(text: str) -> str:
        rendered: str = cached.render_chat([Message("system", INSTRUCTION),  # type: ignore[attr-defined]
                                            Message("user", f"Review: {text}")])
        return rendered

    n = args.chunks * args.rows
    job = [[render(review(c * args.rows + r)) for r in range(args.rows)]
           for c in range(args.chunks)]
    warm = [[render(review(n + r)) for r in range(args.rows)]]
    lengths = [r.prompt_tokens for r in cached.classify(job[0])]
    shared = len(cached.cached_prefixes()[0])  # type: ignore[attr-defined]
    label_ids: dict[str, int] = {}
    engine: Any = cached
    for label in LABELS:
        ids = engine._engine.tokenize(label, add_special=False, parse_special=False)
        assert len(ids) == 1, f"label {label!r} is {len(ids)} tokens; the server reads one"
        label_ids[label] = ids[0]

    binary = TOOLS / "llama-server"
    server = Server(binary, path, label_ids) if binary.is_file() else None
    if server:
        assert server.tokens(job[0][0]) == engine._encode(job[0][0])[0], "tokenizations differ"

    cached_tokens: list[int] = []
    systems: dict[str, Callable[[list[list[str]]], list[dict[str, float]]]] = {
        "inferq, prefix cache": lambda chunks: run_job(cached, chunks, cached_tokens),
        "inferq, cache off": lambda chunks: run_job(plain, chunks),
    }
    if server:
        systems["llama-server -np 8"] = lambda chunks: [
            p for prompts in chunks for p in server.classify(prompts)]
    for run in systems.values():
        run(warm)  # warm: the instruction is in the cache, in every server slot
        run(warm)
    cached_tokens.clear()
    outputs: dict[str, list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    for repeat in range(args.repeats):
        order = list(systems)
        order = order[repeat % len(order):] + order[:repeat % len(order)]
        for name in order:
            started = time.perf_counter()
            outputs[name] = systems[name](job)
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(s) for name, s in seconds.items()}

    print(f"Machine: {machine()}; threads: {THREADS} per engine; shared machine (other "
          "sessions' processes run beside this one)")
    print(f"Versions: {versions('llama-cpp-python', 'inferq')}; llama-server built from the "
          f"llama.cpp vendored in llama-cpp-python {llama_cpp.__version__}")
    print(f"Model: {PACKAGED[MODEL].about}\n")
    print(f"Workload: {args.chunks} chunks x {args.rows} reviews, each prompt the chat "
          f"rendering of one long instruction (the system message) and a short review, "
          f"{min(lengths)}-{max(lengths)} tokens, the first {shared} the same in all; "
          f"labels {'/'.join(LABELS)}; all three warm; medians of {args.repeats} "
          "interleaved repeats of the whole job.\n")
    base = median.get("llama-server -np 8")
    print("| system | job seconds | rows/s | speed-up vs warm llama-server |")
    print("|---|---|---|---|")
    for name, s in median.items():
        ratio = f"{base / s:.2f}x" if base else "—"
        print(f"| {name} | {s:.2f} | {n / s:,.1f} | {ratio} |")
    print()
    record: dict[str, object] = {name: s for name, s in median.items()}
    ours, anew = outputs["inferq, prefix cache"], outputs["inferq, cache off"]
    diff = max(abs(a["positive"] - b["positive"]) for a, b in zip(ours, anew, strict=True))
    same = sum(_label(a) == _label(b) for a, b in zip(ours, anew, strict=True))
    gain = median["inferq, cache off"] / median["inferq, prefix cache"]
    record["cache_gain"] = gain
    kept = round(statistics.median(cached_tokens))
    notes = [f"inferq with the cache against without: {gain:.2f}x; per job {kept:,} prompt "
             f"tokens came from the kept prefix ({shared} a row); same label on {same}/{n} "
             f"rows, largest P(positive) difference {diff:.4f}."]
    if server:
        theirs = outputs["llama-server -np 8"]
        both = [(a, b) for a, b in zip(ours, theirs, strict=True) if len(b) == len(LABELS)]
        agree = sum(_label(a) == _label(b) for a, b in both)
        worst = max((abs(a["positive"] - b["positive"]) for a, b in both), default=math.nan)
        notes.append(f"llama-server: `{' '.join(server.command[1:]).replace(path, 'MODEL')}`"
                     f"; both labels in its top {SERVER_TOP} on {len(both)}/{n} rows, same "
                     f"label as inferq on {agree} of those, largest P(positive) difference "
                     f"{worst:.4f}.")
        record["server_agree"] = agree
        server.close()
    else:
        notes.append(f"llama-server not found at {binary} (run bench/build_llama_tools): "
                     "its row is skipped.")
    print("\n\n".join(notes))
    if args.json:
        print(json.dumps(record))
    cached.close()
    plain.close()


if __name__ == "__main__":
    main()
