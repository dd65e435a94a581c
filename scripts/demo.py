"""Classify a few hundred prompts on every local engine, with the tiny demo model.

The model is random weights generated here: its labels are noise. Pass
``--model PATH`` (a GGUF file or an MLX directory) to use a real one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import inference
from inference import GenerateOptions, LoadOptions
from inference.testing import build_tiny_llama

LABELS = ("positive", "negative", "neutral")
REVIEWS = ["I loved it", "Broke after a day", "It is a chair", "Would buy again",
           "Terrible support", "Arrived on Tuesday"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="GGUF file or MLX directory (default: tiny demo model)")
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    prompts = [f"Review #{i}: {REVIEWS[i % len(REVIEWS)]}. Sentiment:" for i in range(args.rows)]

    if args.model:
        targets = [(inference.default().name, args.model)]
    else:
        tiny = build_tiny_llama(Path(".cache/demo-models"))
        print(f"demo model: {tiny.config.parameter_count:,} parameters of random weights")
        available = set(inference.registry().available())
        targets = [(name, str(path)) for name, path in
                   (("llama_cpp", tiny.gguf_path), ("mlx", tiny.hf_dir)) if name in available]

    for backend, path in targets:
        with inference.load_model(path, LoadOptions(backend=backend)) as model:
            results = model.classify(prompts, GenerateOptions(labels=LABELS))
            m = model.metrics()
            counts = {label: sum(r.label == label for r in results) for label in LABELS}
            errors = sum(not r.ok for r in results)
            print(f"\n[{backend}] {path}")
            print(f"  {len(results)} prompts, {errors} errors, labels: {counts}")
            first = results[0]
            print(f"  first: {prompts[0]!r} -> {first.label} "
                  f"({', '.join(f'{k}={v:.2f}' for k, v in (first.label_probs or {}).items())})")
            print(f"  {m.prompt_tokens:,} prompt tokens in {m.total_seconds:.2f}s "
                  f"({m.prefill_tokens_per_sec:,.0f} tok/s prefill), "
                  f"peak memory {m.peak_memory_bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
