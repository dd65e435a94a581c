"""Turn a stream of token byte pieces into `Token`s, honouring stop strings.

Engines hand out bytes per token; a UTF-8 character can span tokens, and a stop
string can span tokens too. `TokenStream` decodes incrementally and holds back
tokens whose text could be the start of a stop string until it knows.
"""

from __future__ import annotations

import codecs
from dataclasses import replace

from inference.types import Token


class TokenStream:
    """Feed token ids with their bytes; take back the tokens ready to show."""

    def __init__(self, stop_strings: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stop_strings
        self._pending: list[Token] = []
        self.stopped = False  #: a stop string was seen; nothing more is emitted
        self.count = 0        #: tokens fed, the stop string's included

    def feed(self, token_id: int, piece: bytes, logprob: float | None = None,
             top_logprobs: tuple[tuple[str, float], ...] = ()) -> list[Token]:
        """Add one token (with its log-probabilities, if asked for); returns the tokens
        that can be emitted now."""
        if self.stopped:
            return []
        self.count += 1
        self._pending.append(Token(token_id, self._decoder.decode(piece), logprob,
                                   top_logprobs))
        if not self._stops:
            return self._release(len(self._pending))
        text = "".join(t.text for t in self._pending)
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._truncate(cut)
        hold = _longest_stop_prefix_suffix(text, self._stops)
        return self._emit_before(len(text) - hold)

    def flush(self) -> list[Token]:
        """At the end of generation: everything still held back."""
        if self.stopped:
            return []
        tail = self._decoder.decode(b"", final=True)  # an unfinished character -> U+FFFD
        if tail and self._pending:
            last = self._pending[-1]
            self._pending[-1] = replace(last, text=last.text + tail)
        return self._release(len(self._pending))

    def _release(self, n: int) -> list[Token]:
        if n == len(self._pending) and self._decoder.getstate()[0]:
            n -= 1  # the last token's bytes end mid-character: keep it until they complete
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def _emit_before(self, limit: int) -> list[Token]:
        """Release the leading tokens that end at or before character ``limit``."""
        end, n = 0, 0
        for token in self._pending:
            if end + len(token.text) > limit:
                break
            end += len(token.text)
            n += 1
        return self._release(n)

    def _truncate(self, cut: int) -> list[Token]:
        """Release the text before ``cut``; the token holding the cut is trimmed."""
        out: list[Token] = []
        end = 0
        for token in self._pending:
            if end >= cut:
                break
            keep = token.text[: cut - end]
            out.append(replace(token, text=keep))
            end += len(token.text)
        self._pending = []
        return out


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that starts some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-n:]):
                best = n
                break
    return best
