"""`MlxModel`: a `TextModel` on mlx-lm, for the ``mlx`` and ``metal`` backends.

Imported only when a model is loaded, so it imports the engine at the top.

- ``generate`` streams from mlx-lm's ``generate_step``;
- ``batch_generate`` runs mlx-lm's ``BatchGenerator`` (continuous batching),
  with ``parallel_slots`` prompts prefilled and decoded together;
- ``classify`` runs padded prefill-only forwards (`_mlx_prefill`).

Every sampling setting is passed to mlx-lm explicitly, so its own defaults
never apply. Output text comes from the vocabulary's bytes (`_mlx_text`), not
from mlx-lm's detokenizers. ``LoadOptions.gpu_layers`` and ``threads`` have no
MLX counterpart and are ignored; ``batch_tokens`` is the prefill step size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx_lm
import numpy as np
from mlx_lm.generate import BatchGenerator, generate_step, generation_stream, wired_limit
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from inference._base import (
    BaseTextModel,
    ambiguous_labels,
    check_prompt_length,
    label_distribution,
)
from inference._base import options_or_default as _opts
from inference._label_trie import LabelTrie
from inference._memory import current_rss_bytes, peak_rss_bytes
from inference._stream import TokenStream
from inference.backends._mlx_config import (
    DEFAULT_CONTEXT_LEN,
    config_int,
    model_info,
    read_model_dir,
)
from inference.backends._mlx_prefill import prefill_group, rows_per_prompt
from inference.backends._mlx_text import TokenBytes, encode_label, encode_prompt
from inference.errors import GenerationError, InferenceError, ModelLoadError, PromptError
from inference.options import GenerateOptions, LoadOptions
from inference.types import BatchResult, ClassifyResult, GenerateMetrics, ModelInfo, Token

DEFAULT_PARALLEL_SLOTS = 8
DEFAULT_PREFILL_STEP = 2048
#: Tokens the repeat penalty looks back over (llama.cpp's default, not mlx-lm's 20).
REPEAT_PENALTY_WINDOW = 64


@contextmanager
def _engine_errors(what: str) -> Iterator[None]:
    """Report a failure inside mlx-lm as `GenerationError`."""
    try:
        yield
    except InferenceError:
        raise
    except Exception as exc:
        raise GenerationError(f"mlx-lm failed during {what}: {type(exc).__name__}: {exc}") from exc


def _memory(peak_gb: float = 0.0) -> tuple[int, int]:
    """(peak, active) bytes: MLX's figures, the process's RSS where MLX reports 0."""
    peak = max(int(peak_gb * 1e9), int(mx.get_peak_memory())) or peak_rss_bytes()
    return peak, int(mx.get_active_memory()) or current_rss_bytes()


@dataclass(slots=True)
class _Sequence:
    """One prompt in flight in a batch: its output so far."""

    index: int
    prompt_tokens: int
    stream: TokenStream
    tokens: list[Token] = field(default_factory=list)


class MlxModel(BaseTextModel):
    """A model loaded by mlx-lm from a Hugging Face style safetensors directory."""

    def __init__(self, *, model: Any, tokenizer: Any, config: dict[str, Any],
                 context_len: int, parallel_slots: int, prefill_step: int) -> None:
        super().__init__()
        self._model = model
        self._tokenizer = tokenizer
        self._config = config
        self._context_len = context_len
        self._slots = parallel_slots
        self._step = prefill_step
        self._bytes = TokenBytes(tokenizer)
        self._eos = frozenset(int(t) for t in tokenizer.eos_token_ids)
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else 0

    @classmethod
    def load(cls, path: str, options: LoadOptions | None = None,
             backend: str = "mlx") -> MlxModel:
        """Load the directory at ``path``; `ModelLoadError` says what is wrong with it."""
        options = options or LoadOptions()
        config = read_model_dir(path)
        try:
            loaded = mlx_lm.load(path, adapter_path=options.adapter_path or None)
        except Exception as exc:
            raise ModelLoadError(
                path, f"{backend}: mlx-lm could not load it ({type(exc).__name__}: {exc})"
            ) from exc
        model, tokenizer = loaded[0], loaded[1]
        context_len = options.context_len or config_int(
            config, "max_position_embeddings", DEFAULT_CONTEXT_LEN)
        return cls(model=model, tokenizer=tokenizer, config=config, context_len=context_len,
                   parallel_slots=options.parallel_slots or DEFAULT_PARALLEL_SLOTS,
                   prefill_step=options.batch_tokens or DEFAULT_PREFILL_STEP)

    # -- description ------------------------------------------------------------------

    @property
    def model_type(self) -> str:
        return str(self._config.get("model_type", ""))

    def info(self) -> ModelInfo:
        return model_info(self._config, self._context_len)

    def chat_template(self) -> str | None:
        self._check_open()
        template = getattr(self._tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    def special_tokens(self) -> tuple[str, str]:
        self._check_open()
        return self._tokenizer.bos_token or "", self._tokenizer.eos_token or ""

    # -- generation -------------------------------------------------------------------

    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Token]:
        self._check_open()
        opts = _opts(options)
        ids = encode_prompt(self._tokenizer, prompt)
        check_prompt_length(0, len(ids), self._context_len, reserve=1)
        return self._stream(ids, opts)

    def _stream(self, ids: list[int], opts: GenerateOptions) -> Iterator[Token]:
        start = self._begin(opts)
        sampler, processors = self._sampling(opts)
        stops = self._eos | set(opts.stop_tokens)
        stream = TokenStream(opts.stop_strings)
        first = 0.0
        generated = 0
        # mlx-lm annotates the yielded token as an array; it is an int (``y.item()``).
        steps: Any = generate_step(
            mx.array(ids), self._model, max_tokens=self._max_tokens(len(ids), opts),
            sampler=sampler, logits_processors=processors, max_kv_size=None,
            prefill_step_size=self._step, kv_bits=None,
        )
        try:
            streams: list[Any] = [generation_stream]
            with wired_limit(self._model, streams), _engine_errors("generate"):
                for token, logprobs in steps:
                    token_id = int(token)
                    first = first or time.perf_counter()
                    generated += 1
                    if token_id in stops:
                        break
                    yield from stream.feed(token_id, self._bytes(token_id),
                                           *self._logprobs(logprobs, token_id, opts))
                    if stream.stopped:
                        break
                yield from stream.flush()
        finally:
            steps.close()
            end = time.perf_counter()
            first = first or end
            peak, active = _memory()
            self._metrics = GenerateMetrics(
                prompt_tokens=len(ids), generated_tokens=generated,
                prefill_seconds=first - start, decode_seconds=end - first,
                total_seconds=end - start, peak_memory_bytes=peak, active_memory_bytes=active,
            )

    def batch_generate(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        self._check_open()
        opts = _opts(options)
        start = self._begin(opts)
        results: list[BatchResult | None] = [None] * len(prompts)
        valid: list[tuple[int, list[int]]] = []
        for i, text in enumerate(prompts):
            ids = encode_prompt(self._tokenizer, text)
            try:
                check_prompt_length(i, len(ids), self._context_len, reserve=1)
            except PromptError as err:
                results[i] = BatchResult(finish_reason="error", prompt_tokens=len(ids), error=err)
                continue
            valid.append((i, ids))
        stats: Any = None
        if valid:
            with _engine_errors("batch_generate"):
                stats = self._run_batch(valid, opts, results)
        peak, active = _memory(stats.peak_memory if stats else 0.0)
        self._metrics = GenerateMetrics(
            prompt_tokens=sum(len(ids) for _, ids in valid),
            generated_tokens=stats.generation_tokens if stats else 0,
            prefill_seconds=stats.prompt_time if stats else 0.0,
            decode_seconds=stats.generation_time if stats else 0.0,
            total_seconds=time.perf_counter() - start,
            peak_memory_bytes=peak, active_memory_bytes=active,
        )
        return [r if r is not None else BatchResult(finish_reason="error") for r in results]

    def _run_batch(self, valid: list[tuple[int, list[int]]], opts: GenerateOptions,
                   results: list[BatchResult | None]) -> Any:
        """Decode ``valid`` with a BatchGenerator; fills ``results``; returns its BatchStats."""
        sampler, processors = self._sampling(opts)
        stops = sorted(self._eos | set(opts.stop_tokens))
        gen: Any = BatchGenerator(
            self._model, max_tokens=opts.max_tokens, stop_tokens=[[t] for t in stops],
            sampler=sampler, logits_processors=processors,
            completion_batch_size=self._slots, prefill_batch_size=self._slots,
            prefill_step_size=self._step, max_kv_size=None,
        )
        try:
            uids = gen.insert([ids for _, ids in valid],
                              [self._max_tokens(len(ids), opts) for _, ids in valid])
            running = {uid: _Sequence(i, len(ids), TokenStream(opts.stop_strings))
                       for uid, (i, ids) in zip(uids, valid, strict=True)}
            with gen.stats() as stats:
                while responses := gen.next_generated():
                    # A sequence a stop string ended is still running in the engine.
                    early = [r.uid for r in responses
                             if self._collect(running[r.uid], r.token, r.finish_reason, results,
                                              self._logprobs(r.logprobs, r.token, opts))
                             and r.finish_reason is None]
                    if early:
                        gen.remove(early)
        finally:
            gen.close()
        return stats

    def _logprobs(self, logprobs: Any, token_id: int, opts: GenerateOptions
                  ) -> tuple[float | None, tuple[tuple[str, float], ...]]:
        """The token's log-probability and the likeliest alternatives, when asked for.

        mlx-lm hands each step's log-probabilities over the vocabulary (after logits
        processors such as the repeat penalty, before the sampler's temperature)."""
        if not opts.logprobs:
            return None, ()
        values = np.array(logprobs.astype(mx.float32)).reshape(-1)
        top: tuple[tuple[str, float], ...] = ()
        if opts.top_logprobs:
            best = np.argpartition(values, -opts.top_logprobs)[-opts.top_logprobs:]
            best = best[np.argsort(-values[best], kind="stable")]
            top = tuple((self._bytes(int(t)).decode("utf-8", errors="replace"),
                         float(values[t])) for t in best)
        return float(values[token_id]), top

    def _collect(self, seq: _Sequence, token_id: int, engine_finish: str | None,
                 results: list[BatchResult | None],
                 logprobs: tuple[float | None, tuple[tuple[str, float], ...]] = (None, ())
                 ) -> bool:
        """Add one generated token to ``seq``; True (and a result) when it is finished."""
        if engine_finish == "stop":  # EOS or a stop token: not part of the output
            finish: str | None = "stop"
        else:
            seq.tokens += seq.stream.feed(token_id, self._bytes(token_id), *logprobs)
            finish = "stop" if seq.stream.stopped else engine_finish
        if finish is None:
            return False
        seq.tokens += seq.stream.flush()
        results[seq.index] = BatchResult(tokens=tuple(seq.tokens), finish_reason=finish,
                                         prompt_tokens=seq.prompt_tokens)
        return True

    # -- classification ---------------------------------------------------------------

    def classify(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        self._check_open()
        opts = _opts(options)
        start = self._begin(None)
        labels = [encode_label(self._tokenizer, label) for label in opts.labels]
        ambiguous = ambiguous_labels(opts.labels, labels)
        if ambiguous:
            return [ClassifyResult(error=PromptError("ambiguous_labels", ambiguous))
                    for _ in prompts]
        results: list[ClassifyResult | None] = [None] * len(prompts)
        valid: list[tuple[int, list[int]]] = []
        for i, text in enumerate(prompts):
            ids = encode_prompt(self._tokenizer, text)
            try:
                check_prompt_length(i, len(ids), self._context_len)
                self._check_labels(i, len(ids), opts.labels, labels)
            except PromptError as err:
                results[i] = ClassifyResult(prompt_tokens=len(ids), error=err)
                continue
            valid.append((i, ids))
        trie = LabelTrie.build(labels)
        group = max(1, self._slots // rows_per_prompt(trie))
        prefill = 0.0
        for first in range(0, len(valid), group):
            chunk = valid[first : first + group]
            tic = time.perf_counter()
            with _engine_errors("classify"):
                out = prefill_group(self._model, [ids for _, ids in chunk], trie,
                                    pad_id=self._pad_id, step=self._step)
                logits = out.logits.tolist() if opts.logits else None
            prefill += time.perf_counter() - tic
            for p, (i, ids) in enumerate(chunk):
                results[i] = self._classify_result(
                    ids, out.tokens[p], logits[p] if logits else None,
                    out.label_logprobs[p], opts, labels)
        peak, active = _memory()
        self._metrics = GenerateMetrics(
            prompt_tokens=sum(len(ids) for _, ids in valid), prefill_seconds=prefill,
            total_seconds=time.perf_counter() - start,
            peak_memory_bytes=peak, active_memory_bytes=active,
        )
        return [r if r is not None else ClassifyResult() for r in results]

    def _classify_result(self, ids: list[int], token_id: int, logits: list[float] | None,
                         label_logprobs: list[float], opts: GenerateOptions,
                         label_ids: list[list[int]]) -> ClassifyResult:
        text = self._bytes(token_id).decode("utf-8", errors="replace")
        label, probs, lps = None, None, None
        if opts.labels:
            lps = dict(zip(opts.labels, label_logprobs, strict=True))
            label, probs = label_distribution(lps)
        return ClassifyResult(token=Token(token_id, text),
                              logits=tuple(logits) if logits is not None else None,
                              label=label, label_probs=probs, prompt_tokens=len(ids),
                              label_logprobs=lps,
                              label_tokens={name: len(t) for name, t in zip(
                                  opts.labels, label_ids, strict=True)} if lps else None)

    def _check_labels(self, index: int, n_tokens: int, labels: tuple[str, ...],
                      label_ids: list[list[int]]) -> None:
        for label, ids in zip(labels, label_ids, strict=True):
            if n_tokens + len(ids) > self._context_len:
                raise PromptError(
                    "label_too_long",
                    f"prompt is {n_tokens:,} tokens and label {label!r} {len(ids):,} more, "
                    f"context is {self._context_len:,}",
                    index=index,
                )

    # -- shared -----------------------------------------------------------------------

    def _begin(self, opts: GenerateOptions | None) -> float:
        """Start an operation: reset the peak-memory mark, seed the sampler."""
        mx.reset_peak_memory()
        if opts is not None and opts.seed is not None:
            mx.random.seed(opts.seed)
        return time.perf_counter()

    def _max_tokens(self, n_prompt: int, opts: GenerateOptions) -> int:
        """``max_tokens``, cut so that prompt and output fit in the context."""
        return max(1, min(opts.max_tokens, self._context_len - n_prompt))

    @staticmethod
    def _sampling(opts: GenerateOptions) -> tuple[Any, list[Any]]:
        """mlx-lm's sampler and logits processors for ``opts``, every setting explicit."""
        sampler = make_sampler(
            temp=opts.temperature, top_p=opts.top_p, min_p=opts.min_p, min_tokens_to_keep=1,
            top_k=opts.top_k, xtc_probability=0.0, xtc_threshold=0.0, xtc_special_tokens=[],
        )
        processors = make_logits_processors(
            logit_bias=None, repetition_penalty=opts.repeat_penalty or None,
            repetition_context_size=REPEAT_PENALTY_WINDOW,
            presence_penalty=None, frequency_penalty=None,
        )
        return sampler, list(processors)

    def _close(self) -> None:
        self._model = None
        self._tokenizer = None
        mx.clear_cache()
