"""`LlamaModel`: the llama.cpp `TextModel`.

classify: prompts go to llama.cpp in groups; each group is one decode call with
one sequence per prompt and logits only at each prompt's last token. When the
group's prompts share a leading token prefix, that prefix is decoded once and
its KV cells copied to every sequence, so only the suffixes are computed. The
prefix's cells then stay in the context (`PrefixCache`), so the next call (the
next chunk of a job, a later job) starting with it decodes only its suffixes.

batch_generate and generate: continuous batching. Every step is one decode call
holding the next token of each running sequence and the prompt of each
sequence admitted in that step (less the start a kept prefix already holds); a
finished sequence frees its slot and cells for the next prompt.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference._base import (
    BaseTextModel,
    ambiguous_labels,
    check_prompt_length,
    label_distribution,
    options_or_default,
)
from inference._label_trie import LabelTrie
from inference._memory import current_rss_bytes, peak_rss_bytes
from inference._stream import TokenStream
from inference.backends._llama_engine import ContextShape, Engine, Sampler, default_threads
from inference.backends._llama_labels import score_labels
from inference.backends._llama_prefix import DEFAULT_ENTRIES, Match, PrefixCache, common_prefix
from inference.backends._llama_probe import probe
from inference.errors import GenerationError, ModelLoadError, PromptError
from inference.gguf_header import file_type_bits, read_gguf_header
from inference.options import GenerateOptions, LoadOptions
from inference.types import (
    BatchResult,
    ClassifyResult,
    GenerateMetrics,
    ModelInfo,
    Token,
)

DEFAULT_CONTEXT = 4096    #: context_len when LoadOptions leaves it 0 (capped by the model's)
DEFAULT_SLOTS = 64        #: sequences per decode call when parallel_slots is 0
MIN_SHARED_PREFIX = 4     #: shorter common prefixes are not worth a separate decode
MIN_CACHED_PREFIX = 16    #: shorter matches with a kept prefix are decoded anew
MAX_SEQUENCES = 256       #: llama.cpp's limit on sequence ids (LLAMA_MAX_SEQ)

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


class LlamaModel(BaseTextModel):
    """A GGUF model on llama.cpp, with batched classify and generation."""

    def __init__(self, engine: Engine, path: str, backend: str, *, prefix_entries: int = 0,
                 prefix_budget: int = 0) -> None:
        super().__init__()
        self._engine = engine
        self._path = path
        self.backend = backend
        shape = engine.shape
        self._kv_cells = shape.n_ctx
        self._seq_limit = min(shape.n_ctx, engine.n_ctx_train or shape.n_ctx)
        self._slots = shape.n_seq_max - prefix_entries
        self._prefixes = PrefixCache(engine, self._slots, entries=prefix_entries,
                                     budget=min(prefix_budget, shape.n_ctx))
        self._run: object | None = None  # the operation that owns the context now
        #: Prompt tokens the last call did not compute: shared prefixes, kept or not.
        self.reused_prefix_tokens = 0
        #: Of those, the tokens whose cells came from a prefix kept by an earlier call.
        self.cached_prefix_tokens = 0
        #: Label tokens the last classify decoded after its prompts (shared prefixes once).
        self.label_tokens_decoded = 0

    @classmethod
    def load(cls, path: str, options: LoadOptions, *, backend: str) -> LlamaModel:
        """Load the GGUF file at ``path``; `ModelLoadError` when it is missing or corrupt."""
        file = Path(path)
        if not file.is_file():
            reason = "is a directory, not a GGUF file" if file.is_dir() else "no such file"
            raise ModelLoadError(path, reason)
        read_gguf_header(path)  # rejects wrong magic, truncation, absurd counts
        probe(path)  # llama.cpp parses it in a throwaway process first
        if options.adapter_path:
            raise ModelLoadError(path, "LoRA adapters are not supported by the llama.cpp "
                                       "backend; merge the adapter into the GGUF file")
        engine = Engine(path, options.gpu_layers)
        context = options.context_len or min(engine.n_ctx_train or DEFAULT_CONTEXT,
                                             DEFAULT_CONTEXT)
        batch = options.batch_tokens or 512
        entries = 0 if options.prefix_cache_tokens < 0 else DEFAULT_ENTRIES
        slots = min(options.parallel_slots or DEFAULT_SLOTS, MAX_SEQUENCES - entries)
        shape = ContextShape(n_ctx=context, n_seq_max=slots + entries,
                             n_batch=context, n_ubatch=min(batch, context),
                             threads=options.threads or default_threads())
        engine.create_context(shape)
        budget = options.prefix_cache_tokens or context // 2
        return cls(engine, path, backend, prefix_entries=entries, prefix_budget=budget)

    # -- description ------------------------------------------------------------------

    @property
    def model_type(self) -> str:
        return self._engine.meta("general.architecture") or "unknown"

    def info(self) -> ModelInfo:
        file_type = self._engine.meta("general.file_type")
        return ModelInfo(architecture=self.model_type, vocab_size=self._engine.n_vocab,
                         num_layers=self._engine.n_layer(), hidden_size=self._engine.n_embd(),
                         quant_bits=file_type_bits(int(file_type)) if file_type else 0,
                         context_len=self._seq_limit)

    def chat_template(self) -> str | None:
        return self._engine.chat_template()

    def special_tokens(self) -> tuple[str, str]:
        return self._engine.special_text(self._engine.bos), self._engine.special_text(
            self._engine.eos)

    # -- tokens -----------------------------------------------------------------------

    def _encode(self, text: str) -> tuple[list[int], int]:
        """Token ids of a prompt (BOS as the model asks) and how many carry content."""
        bos = self._engine.bos
        ids = self._engine.tokenize(text, add_special=True, parse_special=True)
        if ids[:2] == [bos, bos] and self._engine.adds_bos():
            ids = ids[1:]  # the text (a rendered chat template) began with BOS itself
        bos_added = bool(ids) and ids[0] == bos and self._engine.adds_bos()
        return ids, len(ids) - int(bos_added)

    def _encode_checked(self, index: int, text: str, reserve: int) -> list[int]:
        ids, content = self._encode(text)
        if content == 0:
            raise PromptError("empty_prompt", "prompt is empty", index=index)
        check_prompt_length(index, len(ids), self._seq_limit, reserve)
        return ids

    def _token(self, token_id: int) -> Token:
        return Token(token_id, self._engine.piece(token_id).decode("utf-8", errors="replace"))

    # -- classify ---------------------------------------------------------------------

    def classify(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[ClassifyResult]:
        self._check_open()
        opts = options_or_default(options)
        self._run = run = object()
        started = time.perf_counter()
        labels = [self._engine.tokenize(label, add_special=False, parse_special=False)
                  for label in opts.labels]
        for label, ids in zip(opts.labels, labels, strict=True):
            if not ids:
                raise PromptError("label_too_long", f"label {label!r} has no tokens")
        ambiguous = ambiguous_labels(opts.labels, labels)
        if ambiguous:
            return [ClassifyResult(error=PromptError("ambiguous_labels", ambiguous))
                    for _ in prompts]
        trie = LabelTrie.build(labels)
        reserve = trie.depth
        # cells for one decode call of label branches (`score_labels`), at most a quarter
        # of the context so that prompts keep room
        label_cells = max(reserve, min(self._slots * reserve, self._kv_cells // 4))
        results: list[ClassifyResult | None] = [None] * len(prompts)
        valid: list[tuple[int, list[int]]] = []
        for i, text in enumerate(prompts):
            try:
                valid.append((i, self._encode_checked(i, text, reserve)))
            except PromptError as err:
                results[i] = ClassifyResult(error=err)
        prefill = 0.0
        self.reused_prefix_tokens = self.cached_prefix_tokens = self.label_tokens_decoded = 0
        for group in self._classify_groups(valid, label_cells):
            if self._run is not run:
                raise GenerationError("another operation started on this model mid-classify")
            label_lp: list[dict[str, float]] = [{} for _ in group]
            prompts_ids = [ids for _, ids in group]
            shared = _shared_prefix(prompts_ids)
            used = shared + sum(len(ids) - shared for ids in prompts_ids)
            cells = max(reserve, min(label_cells, self._kv_cells - used))
            try:
                last_logits, seconds = self._prefill_group(prompts_ids, cells)
                if labels:
                    started_labels = time.perf_counter()
                    scores, decoded = score_labels(
                        self._engine, trie, [len(ids) for ids in prompts_ids], last_logits,
                        list(range(len(group), self._slots)), cells)
                    label_lp = [dict(zip(opts.labels, row, strict=True)) for row in scores]
                    self.label_tokens_decoded += decoded
                    seconds += time.perf_counter() - started_labels
            except GenerationError:
                self._clear_memory()  # the cells of a failed decode are not to be trusted
                raise
            prefill += seconds
            for k, (i, ids) in enumerate(group):
                results[i] = self._classify_result(last_logits[k], label_lp[k], len(ids), opts,
                                                   labels)
        prompt_tokens = sum(len(ids) for _, ids in valid)
        self._metrics = _metrics(prompt_tokens, 0, prefill, 0.0, time.perf_counter() - started)
        return [r if r is not None else ClassifyResult(error=PromptError(
            "engine_error", "prompt was not run")) for r in results]

    def _classify_groups(self, valid: list[tuple[int, list[int]]],
                         label_cells: int) -> Iterator[list[tuple[int, list[int]]]]:
        """Consecutive prompts that fit one decode call: slots, and KV cells with sharing
        plus ``label_cells`` for scoring the labels after them."""
        group: list[tuple[int, list[int]]] = []
        prefix = shortest = tokens = 0
        for index, ids in valid:
            if group:
                prefix = common_prefix(group[0][1], ids, prefix)
                shortest = min(shortest, len(ids))
                tokens += len(ids)
                n = len(group) + 1
                shared = min(prefix, shortest - 1)
                shared = shared if shared >= MIN_SHARED_PREFIX else 0
                if n > self._slots or tokens - (n - 1) * shared + label_cells > self._kv_cells:
                    yield group
                    group = []
            if not group:
                prefix = shortest = tokens = len(ids)
            group.append((index, ids))
        if group:
            yield group

    def _prefill_group(self, group: list[list[int]],
                       label_cells: int) -> tuple[list[FloatArray], float]:
        """One decode call for the group; the logits at each prompt's last token, with
        ``label_cells`` KV cells left free for the labels.

        The leading tokens that a kept prefix covers take its cells; the rest of
        the group's shared prefix is decoded once in sequence 0, copied to the
        others and kept for later calls.
        """
        engine, batch, n = self._engine, self._engine.batch, len(group)
        started = time.perf_counter()
        self._release_slots()
        shared = _shared_prefix(group)
        kept = self._prefixes.match(group, max(MIN_CACHED_PREFIX, MIN_SHARED_PREFIX))
        prefix = max(shared, kept.tokens)
        need = prefix - kept.tokens + sum(len(ids) - prefix for ids in group) + label_cells
        if not self._prefixes.make_room(need, self._kv_cells, kept.entry):
            kept, prefix = Match(), shared
        self._prefixes.lend(kept, range(n if prefix == kept.tokens else 1))
        if prefix > kept.tokens:
            batch.clear()
            batch.add(group[0][kept.tokens:prefix], 0, kept.tokens, logits="none")
            engine.decode()
            for seq in range(1, n):
                engine.copy_sequence(0, seq)
            if prefix >= max(MIN_CACHED_PREFIX, MIN_SHARED_PREFIX):
                self._prefixes.remember(0, group[0][:prefix], kept)
        self.reused_prefix_tokens += kept.tokens * n + (prefix - kept.tokens) * (n - 1)
        self.cached_prefix_tokens += kept.tokens * n
        batch.clear()
        rows = [batch.add(ids[prefix:], seq, prefix) + len(ids) - prefix - 1
                for seq, ids in enumerate(group)]
        engine.decode()
        logits = [engine.logits(row) for row in rows]
        return logits, time.perf_counter() - started

    def _release_slots(self) -> None:
        """Free the decode slots' cells; kept prefixes stay."""
        for seq in range(self._slots):
            self._engine.remove_sequence(seq)

    def _clear_memory(self) -> None:
        self._engine.clear_memory()
        self._prefixes.forget()

    def cached_prefixes(self) -> list[list[int]]:
        """Token ids of the prefixes whose KV cells this model keeps between calls."""
        return self._prefixes.prefixes()

    def _classify_result(self, logits: FloatArray, label_lp: dict[str, float], n_tokens: int,
                         opts: GenerateOptions, labels: list[list[int]]) -> ClassifyResult:
        label, probs = label_distribution(label_lp) if label_lp else (None, None)
        return ClassifyResult(
            token=self._token(int(np.argmax(logits))),
            logits=tuple(float(x) for x in logits) if opts.logits else None,
            label=label, label_probs=probs, prompt_tokens=n_tokens,
            label_logprobs=dict(label_lp) if label_lp else None,
            label_tokens={name: len(ids) for name, ids in zip(opts.labels, labels, strict=True)}
            if label_lp else None)

    # -- generation -------------------------------------------------------------------

    def generate(self, prompt: str, options: GenerateOptions | None = None) -> Iterator[Token]:
        self._check_open()
        opts = options_or_default(options)
        ids = self._encode_checked(0, prompt, 1)
        return self._stream(ids, opts)

    def _stream(self, ids: list[int], opts: GenerateOptions) -> Iterator[Token]:
        for _, tokens, _ in self._decode_loop([(0, ids)], opts):
            yield from tokens

    def batch_generate(
        self, prompts: Sequence[str], options: GenerateOptions | None = None
    ) -> list[BatchResult]:
        self._check_open()
        opts = options_or_default(options)
        errors: dict[int, PromptError] = {}
        valid: list[tuple[int, list[int]]] = []
        for i, text in enumerate(prompts):
            try:
                valid.append((i, self._encode_checked(i, text, 1)))
            except PromptError as err:
                errors[i] = err
        tokens: dict[int, list[Token]] = {i: [] for i, _ in valid}
        finish: dict[int, str] = {}
        for i, new, reason in self._decode_loop(valid, opts):
            tokens[i].extend(new)
            if reason:
                finish[i] = reason
        lengths = dict(valid)
        return [
            BatchResult(error=errors[i], finish_reason="error") if i in errors else
            BatchResult(tokens=tuple(tokens[i]), finish_reason=finish[i],
                        prompt_tokens=len(lengths[i]))
            for i in range(len(prompts))
        ]

    def _decode_loop(self, prompts: list[tuple[int, list[int]]],
                     opts: GenerateOptions) -> Iterator[tuple[int, list[Token], str | None]]:
        """Continuous batching. Yields (prompt index, new tokens, finish reason or None)."""
        engine = self._engine
        self._run = run = object()
        clock = _Clock()
        pending = deque(prompts)
        running: dict[int, _Sequence] = {}
        free = list(range(self._slots - 1, -1, -1))
        reserved = 0
        self._release_slots()
        self.reused_prefix_tokens = self.cached_prefix_tokens = 0
        try:
            while pending or running:
                if self._run is not run:
                    raise GenerationError("another operation started on this model "
                                          "while this generation was running")
                engine.batch.clear()
                for seq in running.values():
                    seq.row = engine.batch.add([seq.last], seq.slot, seq.pos)
                    seq.pos += 1
                prompt_tokens = 0
                while pending and free:
                    index, ids = pending[0]
                    need = min(len(ids) + opts.max_tokens, self._seq_limit)
                    if running and (reserved + need > self._kv_cells
                                    or engine.batch.n + len(ids) > engine.batch.capacity):
                        break
                    pending.popleft()
                    seq = _Sequence(index, free.pop(), need, engine.sampler(opts),
                                    TokenStream(opts.stop_strings), pos=len(ids))
                    if opts.repeat_penalty not in (0.0, 1.0):
                        for token in ids:
                            seq.sampler.accept(token)
                    fresh = self._admit(seq, ids, reserved)
                    running[seq.slot] = seq
                    reserved += need
                    prompt_tokens += fresh
                    clock.prompt_tokens += len(ids) - fresh
                try:
                    clock.decode(engine, prompt_tokens)
                except GenerationError:
                    self._clear_memory()  # the cells of a failed decode are not to be trusted
                    raise
                for slot, seq in list(running.items()):
                    new, reason = self._advance(seq, opts)
                    yield seq.index, new, reason
                    if reason:
                        clock.generated += seq.generated
                        del running[slot]
                        engine.remove_sequence(slot)
                        seq.sampler.free()
                        free.append(slot)
                        reserved -= seq.need
        finally:
            for seq in running.values():
                clock.generated += seq.generated
                seq.sampler.free()
            self._metrics = clock.metrics()

    def _admit(self, seq: _Sequence, ids: list[int], reserved: int) -> int:
        """Add a new sequence's prompt to the batch, after the cells of a kept prefix
        that covers its start; returns the prompt tokens left to compute."""
        kept = self._prefixes.match([ids], max(MIN_CACHED_PREFIX, MIN_SHARED_PREFIX))
        if not self._prefixes.make_room(reserved + seq.need, self._kv_cells, kept.entry):
            kept = Match()
        self._prefixes.lend(kept, range(seq.slot, seq.slot + 1))
        self.reused_prefix_tokens += kept.tokens
        self.cached_prefix_tokens += kept.tokens
        fresh = len(ids) - kept.tokens
        seq.row = self._engine.batch.add(ids[kept.tokens:], seq.slot, kept.tokens) + fresh - 1
        return fresh

    def _advance(self, seq: _Sequence, opts: GenerateOptions) -> tuple[list[Token], str | None]:
        """Sample one token for ``seq``; the tokens to emit and why it ended, if it did."""
        logprobs = _log_softmax(self._engine.logits(seq.row)) if opts.logprobs else None
        token = seq.sampler.sample(self._engine, seq.row)
        if self._engine.is_end_of_generation(token) or token in opts.stop_tokens:
            return seq.stream.flush(), "stop"
        if logprobs is None:
            new = seq.stream.feed(token, self._engine.piece(token))
        else:
            new = seq.stream.feed(token, self._engine.piece(token), float(logprobs[token]),
                                  self._top_logprobs(logprobs, opts.top_logprobs))
        seq.generated += 1
        if seq.stream.stopped:
            return new, "stop"
        if seq.generated >= opts.max_tokens or seq.pos >= self._seq_limit:
            return new + seq.stream.flush(), "length"
        seq.last = token
        return new, None

    def _top_logprobs(self, logprobs: FloatArray, n: int) -> tuple[tuple[str, float], ...]:
        """The ``n`` likeliest tokens as (text, log-probability), likeliest first."""
        if n == 0:
            return ()
        best = np.argpartition(logprobs, -n)[-n:]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        return tuple((self._token(int(t)).text, float(logprobs[t])) for t in best)

    def _close(self) -> None:
        self._engine.free()


@dataclass(slots=True)
class _Sequence:
    index: int           #: the prompt's index in the call
    slot: int            #: llama.cpp sequence id
    need: int            #: KV cells reserved
    sampler: Sampler
    stream: TokenStream
    pos: int = 0         #: position of the next token to decode
    row: int = -1        #: batch row holding this sequence's logits this step
    last: int = -1       #: the token to decode next step
    generated: int = 0


@dataclass(slots=True)
class _Clock:
    """Splits decode-call time between prefill and decode by token share."""

    started: float = field(default_factory=time.perf_counter)
    prefill: float = 0.0
    decode_time: float = 0.0
    prompt_tokens: int = 0
    generated: int = 0

    def decode(self, engine: Engine, prompt_tokens: int) -> None:
        n = engine.batch.n
        started = time.perf_counter()
        engine.decode()
        seconds = time.perf_counter() - started
        share = prompt_tokens / n if n else 0.0
        self.prefill += seconds * share
        self.decode_time += seconds * (1 - share)
        self.prompt_tokens += prompt_tokens

    def metrics(self) -> GenerateMetrics:
        return _metrics(self.prompt_tokens, self.generated, self.prefill, self.decode_time,
                        time.perf_counter() - self.started)


def _metrics(prompt: int, generated: int, prefill: float, decode: float,
             total: float) -> GenerateMetrics:
    return GenerateMetrics(prompt_tokens=prompt, generated_tokens=generated,
                           prefill_seconds=prefill, decode_seconds=decode, total_seconds=total,
                           active_memory_bytes=current_rss_bytes(),
                           peak_memory_bytes=peak_rss_bytes())


def _shared_prefix(group: list[list[int]]) -> int:
    """Tokens all prompts share, leaving each at least one of its own; 0 if not worth it."""
    if len(group) < 2:
        return 0
    shared = min(len(ids) for ids in group) - 1
    first = group[0]
    for ids in group[1:]:
        shared = common_prefix(first, ids, shared)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _log_softmax(logits: FloatArray) -> FloatArray:
    shifted = logits.astype(np.float64) - float(np.max(logits))
    result: FloatArray = shifted - np.log(np.sum(np.exp(shifted)))
    return result
