"""Options for generation and for loading, with go-inference's fields and defaults.

Go's ``With*`` option closures become frozen keyword-only dataclasses: build one,
derive variants with :func:`dataclasses.replace`. Invalid values raise
``ValueError`` when the object is built, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass


def _require(condition: bool, field_name: str, value: object, rule: str) -> None:
    if not condition:
        raise ValueError(f"{field_name}={value!r}: {rule}")


#: The most alternatives a token's log-probability comes with (OpenAI's limit).
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateOptions:
    """How to sample, and what to return. Used by every `TextModel` method."""

    max_tokens: int = 256                 #: tokens to generate at most
    temperature: float = 0.0              #: 0 = greedy
    top_k: int = 0                        #: 0 = disabled
    top_p: float = 0.0                    #: 0 = disabled
    min_p: float = 0.0                    #: 0 = disabled
    repeat_penalty: float = 0.0           #: 0 = disabled, 1.0 = no penalty
    stop_tokens: tuple[int, ...] = ()     #: token ids that end generation
    stop_strings: tuple[str, ...] = ()    #: texts that end generation (not returned)
    seed: int | None = None               #: makes sampling reproducible; None = random
    logits: bool = False                  #: classify returns the last position's logits
    labels: tuple[str, ...] = ()          #: classify scores these labels; () = free token
    logprobs: bool = False                #: generated tokens carry their log-probability
    top_logprobs: int = 0                 #: ... and the this-many likeliest alternatives

    def __post_init__(self) -> None:
        # Accept lists for the tuple fields; store tuples so the object stays hashable.
        for name in ("stop_tokens", "stop_strings", "labels"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name}={value!r}: give a sequence, not one string")
            object.__setattr__(self, name, tuple(value))
        _require(self.max_tokens >= 1, "max_tokens", self.max_tokens, "must be at least 1")
        _require(self.temperature >= 0, "temperature", self.temperature, "must be >= 0")
        _require(self.top_k >= 0, "top_k", self.top_k, "must be >= 0 (0 = disabled)")
        _require(0 <= self.top_p <= 1, "top_p", self.top_p, "must be in [0, 1] (0 = disabled)")
        _require(0 <= self.min_p <= 1, "min_p", self.min_p, "must be in [0, 1] (0 = disabled)")
        _require(
            self.repeat_penalty >= 0, "repeat_penalty", self.repeat_penalty, "must be >= 0"
        )
        for token in self.stop_tokens:
            _require(
                isinstance(token, int) and token >= 0, "stop_tokens", token,
                "token ids are non-negative integers",
            )
        for text in self.stop_strings:
            _require(isinstance(text, str) and text != "", "stop_strings", text,
                     "stop strings are non-empty strings")
        for label in self.labels:
            _require(isinstance(label, str) and label != "", "labels", label,
                     "labels are non-empty strings")
        _require(len(set(self.labels)) == len(self.labels), "labels", self.labels,
                 "labels must be unique")
        _require(isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                 "top_logprobs", self.top_logprobs, f"must be in [0, {MAX_TOP_LOGPROBS}]")
        _require(self.logprobs or not self.top_logprobs, "top_logprobs", self.top_logprobs,
                 "needs logprobs=True")
        if self.seed is not None:
            _require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed,
                     "must be a non-negative integer or None")

    @property
    def greedy(self) -> bool:
        """True when sampling is deterministic argmax."""
        return self.temperature == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    """How to load a model."""

    backend: str = ""          #: "" = the registry's default backend
    context_len: int = 0       #: 0 = the model's own context length (capped by the backend)
    gpu_layers: int = -1       #: -1 = all layers on the GPU, 0 = CPU only
    parallel_slots: int = 0    #: sequences decoded together; 0 = backend default
    batch_tokens: int = 0      #: tokens per engine call; 0 = backend default
    adapter_path: str = ""     #: LoRA adapter to apply; "" = none
    threads: int = 0           #: CPU threads; 0 = backend default
    prefix_cache_tokens: int = 0  #: KV cells kept for prefixes across calls; 0 = default, -1 = off

    def __post_init__(self) -> None:
        _require(self.context_len >= 0, "context_len", self.context_len,
                 "must be >= 0 (0 = model default)")
        _require(self.gpu_layers >= -1, "gpu_layers", self.gpu_layers,
                 "must be >= -1 (-1 = all, 0 = none)")
        _require(0 <= self.parallel_slots <= 256, "parallel_slots", self.parallel_slots,
                 "must be in [0, 256] (0 = backend default)")
        _require(self.batch_tokens >= 0, "batch_tokens", self.batch_tokens,
                 "must be >= 0 (0 = backend default)")
        _require(self.threads >= 0, "threads", self.threads, "must be >= 0 (0 = default)")
        _require(self.prefix_cache_tokens >= -1, "prefix_cache_tokens", self.prefix_cache_tokens,
                 "must be >= -1 (0 = backend default, -1 = off)")
