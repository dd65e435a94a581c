"""MLX backend vs calling mlx-lm's own batch generation directly.

    python -m bench.bench_mlx

Same model directory, same token ids, same batch sizes, greedy, in one run. The
backend adds tokenization checks, per-prompt stop handling and metrics on top of
mlx-lm's BatchGenerator; this measures what that costs.
"""

from __future__ import annotations

import mlx_lm

import inference
from bench.common import bench_model, compare, machine, versions
from inference import GenerateOptions, LoadOptions

PROMPTS = [f"Story {i}: once upon a time" for i in range(8)]
MAX_TOKENS = 32


def main() -> None:
    files = bench_model()
    ours = inference.load_model(str(files.hf_dir), LoadOptions(backend="mlx", parallel_slots=8))
    model, tokenizer = mlx_lm.load(str(files.hf_dir))
    token_ids = [tokenizer.encode(p) for p in PROMPTS]
    opts = GenerateOptions(max_tokens=MAX_TOKENS)

    def direct() -> object:
        return mlx_lm.batch_generate(model, tokenizer, token_ids, max_tokens=MAX_TOKENS,
                                     prefill_batch_size=8, completion_batch_size=8)

    a, b = compare(lambda: ours.batch_generate(PROMPTS, opts), direct)
    generated = sum(len(r.tokens) for r in ours.batch_generate(PROMPTS, opts))
    print(f"Machine: {machine()}")
    print(f"Versions: {versions('mlx', 'mlx-lm', 'inferq')}")
    print(f"Model: {files.config.parameter_count / 1e6:.0f}M-parameter llama, f32, random "
          "weights (inference.testing.BENCH_CONFIG), MLX on the CPU\n")
    print("| workload | inferq mlx backend | mlx-lm batch_generate | ratio |")
    print("|---|---|---|---|")
    print(f"| batch_generate, 8 prompts x {MAX_TOKENS} tokens | {generated / a:,.1f} tok/s | "
          f"{generated / b:,.1f} tok/s | {b / a:.2f}x |")
    ours.close()


if __name__ == "__main__":
    main()
