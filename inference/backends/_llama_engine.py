"""A thin, typed wrapper over llama.cpp's low-level C API (through llama-cpp-python).

The high-level ``llama_cpp.Llama`` cannot put several sequences in one decode
call, so inferq drives the C API: one context with ``n_seq_max`` sequences and a
unified KV cache, batches built from numpy arrays, logits read per output row,
KV cells copied between sequences for shared prefixes, and one llama.cpp
sampler chain per sequence.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc
import numpy as np

from inference.errors import GenerationError, ModelLoadError
from inference.options import GenerateOptions

log = logging.getLogger("inference.llama_cpp")

_RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a random seed
_REPEAT_LAST_N = 64

# -- logging: llama.cpp's log lines go to Python logging; the recent ones are kept
# -- so that a failed load can say why.

_recent_log: deque[str] = deque(maxlen=64)
_log_lock = threading.Lock()
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the last line.
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


@lc.llama_log_callback  # type: ignore[untyped-decorator]
def _log_callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    line = text.decode("utf-8", errors="replace").rstrip()
    if not line:
        return
    with _log_lock:
        _recent_log.append(line)
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", line)


_initialised = False


def _init_backend() -> None:
    global _initialised
    if not _initialised:
        lc.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lc.llama_backend_init()
        _initialised = True


def _log_tail(since: int) -> str:
    with _log_lock:
        lines = list(_recent_log)[since:]
    errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return "; ".join(errors[-3:] or lines[-2:])


@dataclass(frozen=True, slots=True)
class ContextShape:
    """Sizes of the llama.cpp context."""

    n_ctx: int      #: KV cells shared by every sequence; also one sequence's limit
    n_seq_max: int  #: sequences in one decode call
    n_batch: int    #: tokens in one decode call
    n_ubatch: int   #: tokens per physical compute step
    threads: int


class Batch:
    """A ``llama_batch`` whose arrays are numpy buffers: one sequence id per token, or
    several for a token added by `add_shared`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq = np.zeros(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        seq_ptr = ctypes.POINTER(lc.llama_seq_id)
        base = self.seq.ctypes.data
        size = self.seq.itemsize
        self._seq_ptrs = (seq_ptr * capacity)(
            *(ctypes.cast(base + i * size, seq_ptr) for i in range(capacity))
        )
        self._shared: list[tuple[int, np.ndarray[Any, Any]]] = []  # (index, its seq ids)
        self.n = 0
        self.struct = lc.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(ctypes.POINTER(lc.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(lc.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_ptrs,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def clear(self) -> None:
        seq_ptr = ctypes.POINTER(lc.llama_seq_id)
        for index, _ in self._shared:  # back to the token's own one-id slot
            self._seq_ptrs[index] = ctypes.cast(self.seq.ctypes.data + index * self.seq.itemsize,
                                                seq_ptr)
            self.n_seq_id[index] = 1
        self._shared.clear()
        self.n = 0

    def add_shared(self, token: int, seqs: list[int], pos: int, logits: bool) -> int:
        """Append one token that belongs to every sequence in ``seqs`` (a prefix several
        branches share: decoded once, its cell visible to each). Returns its index."""
        index = self.add([token], seqs[0], pos, logits="last" if logits else "none")
        if len(seqs) > 1:
            ids = np.array(seqs, dtype=np.int32)
            self._shared.append((index, ids))  # kept alive until clear()
            self._seq_ptrs[index] = ids.ctypes.data_as(ctypes.POINTER(lc.llama_seq_id))
            self.n_seq_id[index] = len(seqs)
        return index

    def add(self, tokens: list[int] | np.ndarray[Any, Any], seq: int, start_pos: int,
            logits: str = "last") -> int:
        """Append ``tokens`` of sequence ``seq`` from position ``start_pos``.

        ``logits`` is ``"last"``, ``"all"`` or ``"none"``. Returns the batch
        index of the first token added.
        """
        k = len(tokens)
        first = self.n
        end = first + k
        if end > self.capacity:
            raise GenerationError(f"batch overflow: {end} tokens > capacity {self.capacity}")
        self.token[first:end] = tokens
        self.pos[first:end] = np.arange(start_pos, start_pos + k, dtype=np.int32)
        self.seq[first:end] = seq
        self.logits[first:end] = 1 if logits == "all" else 0
        if logits == "last" and k:
            self.logits[end - 1] = 1
        self.n = end
        return first


class Engine:
    """One llama.cpp model and one context. Not thread-safe."""

    def __init__(self, path: str, gpu_layers: int) -> None:
        _init_backend()
        self._log_mark = len(_recent_log)
        self.path = path
        model_params = lc.llama_model_default_params()
        model_params.n_gpu_layers = gpu_layers
        self.ctx = None
        self.model = lc.llama_model_load_from_file(path.encode(), model_params)
        if not self.model:
            raise ModelLoadError(path, f"llama.cpp could not load it ({_log_tail(self._log_mark)})")
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(self.model))
        self._pieces: dict[int, bytes] = {}
        self.memory: Any = None
        self.batch = Batch(1)
        self.shape = ContextShape(n_ctx=0, n_seq_max=0, n_batch=1, n_ubatch=1, threads=1)

    def create_context(self, shape: ContextShape) -> None:
        """Create the context; the model must be loaded."""
        self.shape = shape
        params = lc.llama_context_default_params()
        params.n_ctx = shape.n_ctx
        params.n_batch = shape.n_batch
        params.n_ubatch = shape.n_ubatch
        params.n_seq_max = shape.n_seq_max
        params.n_threads = shape.threads
        params.n_threads_batch = shape.threads
        params.kv_unified = True  # copied prefix cells are shared, not duplicated
        params.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, params)
        if not self.ctx:
            tail = _log_tail(self._log_mark)
            self.free()
            raise ModelLoadError(self.path, f"llama.cpp could not create a context ({tail})")
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = Batch(shape.n_batch)

    # -- vocabulary -----------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        buf = (lc.llama_token * room)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, room, add_special, parse_special)
        if n < 0:  # more tokens than room: retry with the exact size
            room = -n
            buf = (lc.llama_token * room)()
            n = lc.llama_tokenize(self.vocab, data, len(data), buf, room, add_special,
                                  parse_special)
        if n < 0:
            raise GenerationError(f"tokenization failed for a text of {len(data):,} bytes")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token contributes to text; control tokens give b''."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = lc.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            cached = buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def is_end_of_generation(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))

    def special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return (lc.llama_vocab_get_text(self.vocab, token) or b"").decode("utf-8", "replace")

    @property
    def bos(self) -> int:
        return int(lc.llama_vocab_bos(self.vocab))

    @property
    def eos(self) -> int:
        return int(lc.llama_vocab_eos(self.vocab))

    def adds_bos(self) -> bool:
        return bool(lc.llama_vocab_get_add_bos(self.vocab))

    # -- metadata -------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = lc.llama_model_meta_val_str(self.model, key.encode(), buf, 4096)
        if n < 0:
            return None
        if n >= 4096:  # long value (a chat template): ask again with room
            buf = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str(self.model, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        raw = lc.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def n_layer(self) -> int:
        return int(lc.llama_model_n_layer(self.model))

    def n_embd(self) -> int:
        return int(lc.llama_model_n_embd(self.model))

    # -- compute --------------------------------------------------------------------

    def decode(self) -> None:
        """Run the batch in one llama_decode call."""
        self.batch.struct.n_tokens = self.batch.n
        rc = lc.llama_decode(self.ctx, self.batch.struct)
        if rc != 0:
            reason = {1: "no KV cache slot for the batch", 2: "aborted", -1: "invalid batch"}
            raise GenerationError(f"llama_decode failed ({rc}: {reason.get(rc, 'fatal error')})")

    def logits(self, batch_index: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """A copy of the logits output for the batch token at ``batch_index``."""
        ptr = lc.llama_get_logits_ith(self.ctx, batch_index)
        if not ptr:
            raise GenerationError(f"no logits for batch index {batch_index}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def clear_memory(self) -> None:
        lc.llama_memory_clear(self.memory, True)

    def copy_sequence(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        """Give ``dst`` the cells ``src`` holds at positions ``start`` up to ``end``
        (-1 = from the first, to the last); a unified cache shares them, copying nothing."""
        lc.llama_memory_seq_cp(self.memory, src, dst, start, end)

    def remove_sequence(self, seq: int, start: int = -1) -> None:
        """Drop ``seq``'s cells from position ``start`` on (-1 = all)."""
        lc.llama_memory_seq_rm(self.memory, seq, start, -1)

    # -- sampling -------------------------------------------------------------------

    def sampler(self, options: GenerateOptions) -> Sampler:
        return Sampler(options, self.n_vocab)

    def free(self) -> None:
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None


class Sampler:
    """A llama.cpp sampler chain built from every option, so no engine default leaks.

    Order: repeat penalty, top-k, top-p, min-p, temperature, seeded draw; or
    plain argmax when the temperature is 0.
    """

    def __init__(self, options: GenerateOptions, n_vocab: int) -> None:
        self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())

        def add(stage: Any) -> None:
            lc.llama_sampler_chain_add(self.chain, stage)

        if options.repeat_penalty not in (0.0, 1.0):
            add(lc.llama_sampler_init_penalties(n_vocab, _REPEAT_LAST_N, options.repeat_penalty,
                                                0.0, 0.0))
        if options.greedy:
            add(lc.llama_sampler_init_greedy())
            return
        if options.top_k > 0:
            add(lc.llama_sampler_init_top_k(options.top_k))
        if options.top_p > 0:
            add(lc.llama_sampler_init_top_p(options.top_p, 1))
        if options.min_p > 0:
            add(lc.llama_sampler_init_min_p(options.min_p, 1))
        add(lc.llama_sampler_init_temp(options.temperature))
        seed = options.seed if options.seed is not None else _RANDOM_SEED
        add(lc.llama_sampler_init_dist(seed))

    def sample(self, engine: Engine, batch_index: int) -> int:
        """Draw the next token from the logits at ``batch_index`` (and accept it)."""
        return int(lc.llama_sampler_sample(self.chain, engine.ctx, batch_index))

    def accept(self, token: int) -> None:
        """Feed a prompt token to the chain, for the repeat penalty's history."""
        lc.llama_sampler_accept(self.chain, token)

    def free(self) -> None:
        if self.chain:
            lc.llama_sampler_free(self.chain)
            self.chain = None


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))
