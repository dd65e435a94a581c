"""Label scoring over HTTP, from the log-probabilities of generated tokens.

A label's log-probability after a prompt is the sum over its tokens (the
label tokenized on its own, as the local engines do) of each token's
log-probability given the prompt and the label tokens before it. Echoed prompt
log-probabilities are not used: llama-cpp-python's server shifts them by one
position on models without a BOS token (its issue 1983), and llama.cpp's
server returns none. Generated-token log-probabilities are right on both: they
are the model's raw distribution, before logit bias and grammar.

Per item (a prompt or a conversation):

1. One request for one greedy token with the ``TOP`` most likely first tokens:
   the free token, the prompt's token count, and every single-token label
   found among them.
2. One more request per label not scored by 1 (longer labels, or a first token
   outside the top): the label forced token by token (a ``logit_bias`` ranking
   its tokens in order, and, for several tokens, a grammar accepting exactly the
   label's text), ``max_tokens`` = its length, each generated token's
   log-probability read back. A server that produces other tokens than the
   label's own gives the item an ``unsupported`` error, never a guess.

Label tokens come from the server's tokenizer: llama.cpp's ``/tokenize`` (ids
and pieces) or llama-cpp-python's ``/extras/tokenize`` and
``/extras/detokenize``. Servers with neither cannot score labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inference.backends import _http_openai as api
from inference.backends._http_client import HttpStatusError, JsonClient, JsonObject
from inference.errors import PromptError
from inference.options import GenerateOptions

#: Most likely first tokens asked for with the first request. On SmolLM2-135M, chat
#: answers "positive"/"negative" rank up to 88th, so 20 would force most labels.
TOP = 100
#: The fallback for servers that cap it (vLLM's default ``max_logprobs``; OpenAI: 5).
SMALL_TOP = 20
#: Logit bias of a label's last token; earlier tokens get multiples of it.
_BIAS = 100.0

Post = Callable[[str, JsonObject], JsonObject]


@dataclass(frozen=True, slots=True)
class LabelTokens:
    """A label as the server's tokenizer splits it: ids and each token's text."""

    label: str
    ids: tuple[int, ...]
    pieces: tuple[str, ...]


def tokenize_labels(root: JsonClient, model: str, labels: Sequence[str]) -> list[LabelTokens]:
    """Each label's tokens (no special tokens added), asked of the server's tokenizer.

    Raises `PromptError` (``unsupported``) when the server has no tokenizer
    endpoint, ``label_too_long`` for a label without tokens.
    """
    try:
        out = [_llama_server_tokens(root, label) for label in labels]
    except HttpStatusError as exc:
        if exc.status not in (400, 404, 405, 422):
            raise
        try:
            out = _llama_cpp_python_tokens(root, model, labels)
        except HttpStatusError as second:
            if second.status not in (400, 404, 405, 422):
                raise
            raise PromptError("unsupported", (
                f"{root.url('')} has no tokenizer endpoint (llama.cpp's /tokenize or "
                "llama-cpp-python's /extras/tokenize), so labels cannot be scored token by "
                f"token: {exc.message}; {second.message}")) from None
    for tokens in out:
        if not tokens.ids:
            raise PromptError("label_too_long", f"label {tokens.label!r} has no tokens")
    return out


def _llama_server_tokens(root: JsonClient, label: str) -> LabelTokens:
    answer = root.post("/tokenize", {"content": label, "add_special": False,
                                     "parse_special": False, "with_pieces": True})
    tokens = answer.get("tokens")
    if not isinstance(tokens, list):
        raise HttpStatusError(root.url("/tokenize"), 422, f"unexpected answer {answer!r:.200}")
    ids: list[int] = []
    pieces: list[str] = []
    for token in tokens:
        if isinstance(token, int):  # a server that ignores with_pieces
            ids.append(token)
            pieces.append("")
        elif isinstance(token, dict) and isinstance(token.get("id"), int):
            ids.append(token["id"])
            piece = token.get("piece")
            pieces.append(piece if isinstance(piece, str) else bytes(piece or []).decode(
                "utf-8", "replace"))
        else:
            raise HttpStatusError(root.url("/tokenize"), 422, f"unexpected token {token!r:.100}")
    return LabelTokens(label, tuple(ids), tuple(pieces))


def _llama_cpp_python_tokens(root: JsonClient, model: str,
                             labels: Sequence[str]) -> list[LabelTokens]:
    def tokenize(text: str) -> list[int]:
        answer = root.post("/extras/tokenize", {"model": model, "input": text})
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise HttpStatusError(root.url("/extras/tokenize"), 422,
                                  f"unexpected answer {answer!r:.200}")
        return tokens

    # The endpoint adds the model's special tokens (BOS, EOS): those of "" are stripped.
    specials = tokenize("")
    out = []
    for label in labels:
        ids = tokenize(label)
        if specials and ids[:len(specials)] == specials:
            ids = ids[len(specials):]
        elif specials and ids[-len(specials):] == specials:
            ids = ids[:-len(specials)]
        pieces = []
        for token in ids:
            answer = root.post("/extras/detokenize", {"model": model, "tokens": [token]})
            pieces.append(str(answer.get("text", "")))
        out.append(LabelTokens(label, tuple(ids), tuple(pieces)))
    return out


def first_token_body(item: api.Item, top: int) -> tuple[str, JsonObject]:
    """Endpoint and body for one greedy token after ``item``, with the ``top`` alternatives."""
    path, body = api.request_for(item)
    body.update(api.sampling_body(GenerateOptions(max_tokens=1)))
    if top:
        body.update(api.logprobs_fields(api.is_chat(item), top))
    return path, body


def from_top(step: api.Step, label: LabelTokens) -> float | None:
    """A single-token label's log-probability among the listed alternatives, if there."""
    if len(label.ids) != 1:
        return None
    candidates = (step.token, *step.top)
    if all(c.id is not None for c in candidates):
        found = [c.logprob for c in candidates if c.id == label.ids[0]]
        return found[0] if found else None
    piece = label.pieces[0]
    if not piece or "\ufffd" in piece:
        return None  # texts of partial characters are ambiguous
    matching = {c.logprob for c in candidates if c.text == piece}
    return matching.pop() if len(matching) == 1 else None


def forced(post: Post, item: api.Item, label: LabelTokens, index: int,
           url: str) -> tuple[float | PromptError, JsonObject | None]:
    """The label's log-probability from a request that generates exactly its tokens."""
    n = len(label.ids)
    path, body = api.request_for(item)
    body.update(api.sampling_body(GenerateOptions(max_tokens=n)))
    body.update(api.logprobs_fields(api.is_chat(item), 1))
    bias: dict[str, float] = {}
    for position, token in enumerate(label.ids):
        bias.setdefault(str(token), _BIAS * (n - position))
    body["logit_bias"] = bias
    if n > 1:
        body["grammar"] = api.grammar_literal(label.label)
    try:
        answer = post(path, body)
    except HttpStatusError as exc:
        if not api.is_prompt_error(exc):
            raise
        return api.prompt_error(exc, index, label=label.label), None
    steps = api.logprob_steps(api.first_choice(answer))
    if steps is None:
        return PromptError("unsupported", f"{url} returned no log-probabilities for the "
                           f"tokens of label {label.label!r}", index=index), answer
    got = steps[:n]
    matches = len(got) == n and all(
        s.token.id == token if s.token.id is not None else s.token.text == piece
        for s, token, piece in zip(got, label.ids, label.pieces, strict=False))
    if not matches:
        seen = [s.token.id if s.token.id is not None else s.token.text for s in got]
        want = list(label.ids) if any(s.token.id is not None for s in got) else list(
            label.pieces)
        return PromptError("unsupported", (
            f"{url} generated {seen!r} where label {label.label!r} is {want!r}: the server "
            "did not follow the logit bias and grammar, so the label cannot be scored"),
            index=index), answer
    return sum(s.token.logprob for s in got), answer
