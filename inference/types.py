"""Value types of the inference contract: what goes in and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.errors import PromptError


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token: its vocabulary id and the text it adds.

    ``text`` is what the token contributes to the decoded output; a token that
    ends inside a multi-byte UTF-8 character contributes ``""`` and the next
    one carries the whole character.
    """

    id: int
    text: str
    #: The token's log-probability under the model, when asked for
    #: (`GenerateOptions.logprobs`); None otherwise. Before sampling's temperature, top-k
    #: or top-p, as OpenAI reports it.
    logprob: float | None = None
    #: The likeliest tokens at this position as (text, log-probability), most likely
    #: first (`GenerateOptions.top_logprobs` of them).
    top_logprobs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassifyResult:
    """The outcome of one prompt's prefill.

    ``token`` is the most likely next token at the prompt's last position.
    ``logits`` holds the whole vocabulary's logits there when asked for
    (``GenerateOptions(logits=True)``). With labels, ``label`` is the most
    likely label and ``label_probs`` maps every label to its probability,
    computed over the label's full token sequence and normalised over the
    labels. ``label_logprobs`` holds each label's unnormalised log-probability (the sum
    over its tokens) and ``label_tokens`` its token count, for calibration. ``error`` is
    set, and the rest empty, when the prompt cannot run.
    """

    token: Token | None = None
    logits: tuple[float, ...] | None = None
    label: str | None = None
    label_probs: dict[str, float] | None = None
    prompt_tokens: int = 0
    label_logprobs: dict[str, float] | None = None
    label_tokens: dict[str, int] | None = None
    error: PromptError | None = None

    @property
    def ok(self) -> bool:
        """True when the prompt ran."""
        return self.error is None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """One prompt's generated tokens, or the error that stopped it.

    ``finish_reason`` is ``"stop"`` (end of sequence, a stop token or a stop
    string), ``"length"`` (max tokens reached) or ``"error"``.
    """

    tokens: tuple[Token, ...] = ()
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    error: PromptError | None = None

    @property
    def text(self) -> str:
        """The generated text, the tokens' texts joined."""
        return "".join(t.text for t in self.tokens)

    @property
    def ok(self) -> bool:
        """True when the prompt ran."""
        return self.error is None


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateMetrics:
    """Performance of the last operation on a model.

    Prefill is the forward pass over the prompts, decode the token-by-token
    generation after it. Memory is the device's where the engine reports it,
    else the process's peak resident set (never zero on a CPU backend).
    """

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    peak_memory_bytes: int = 0
    active_memory_bytes: int = 0

    @property
    def prefill_tokens_per_sec(self) -> float:
        """Prompt tokens processed per second of prefill; 0 when none ran."""
        if self.prefill_seconds <= 0:
            return 0.0
        return self.prompt_tokens / self.prefill_seconds

    @property
    def decode_tokens_per_sec(self) -> float:
        """Tokens generated per second of decode; 0 when none ran."""
        if self.decode_seconds <= 0:
            return 0.0
        return self.generated_tokens / self.decode_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """What a loaded model is. ``quant_bits`` 0 = not quantised (float)."""

    architecture: str
    vocab_size: int
    num_layers: int
    hidden_size: int
    quant_bits: int = 0
    quant_group: int = 0
    context_len: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveredModel:
    """A model found on disk by :func:`inference.discover`.

    ``format`` is ``"gguf"`` (one file) or ``"safetensors"`` (a Hugging Face
    style directory). ``model_type`` comes from ``config.json`` or the GGUF
    header's architecture, ``""`` when unreadable.
    """

    path: str
    format: str
    model_type: str = ""
    quant_bits: int = 0
    quant_group: int = 0
    num_files: int = 1
    size_bytes: int = 0
    extra: dict[str, str] = field(default_factory=dict)
