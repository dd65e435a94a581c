"""What the server said about each request of a batch, summed into `GenerateMetrics`.

Fields, as the ``http`` backend fills them:

- ``prompt_tokens`` / ``generated_tokens``: the server's ``usage.prompt_tokens``
  and ``usage.completion_tokens``, summed over the batch's items (less the
  end-of-generation token that llama.cpp's server counts, see
  `_http_openai.generated_tokens`). Classify, like
  the local engines, counts prompt tokens only (generated 0): those of each
  item's first request; the extra label requests re-read the same prompt from
  the server's cache and are not counted again.
- ``total_seconds``: the batch's wall time, measured here.
- ``prefill_seconds`` + ``decode_seconds`` = ``total_seconds``, split in the
  ratio of the server's own times summed over the requests (llama.cpp's
  ``timings.prompt_ms`` : ``timings.predicted_ms``), so that tokens per second
  stay the batch's throughput even when requests run concurrently. A server
  that sends no timings (llama-cpp-python's, vLLM) leaves the split unknown:
  the whole wall time counts as decode for generation and as prefill for
  classify, so the rates are end-to-end lower bounds.
"""

from __future__ import annotations

import threading

from inference.backends import _http_openai as api
from inference.backends._http_client import JsonObject
from inference.types import GenerateMetrics


class Ledger:
    """Sums of one batch's answers. Safe to share between the batch's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.prompt_tokens = self.generated_tokens = 0
        self.server_prompt = self.server_decode = 0.0
        self.timed = False
        self.requests = 0

    def count(self, answer: JsonObject, *, tokens: bool = True,
              generated: int | None = None) -> None:
        """Add an answer's timings, and its ``usage`` unless ``tokens`` is False.

        ``generated`` overrides ``usage.completion_tokens`` (see
        `api.generated_tokens`).
        """
        prompt, completion = api.usage(answer)
        generated = completion if generated is None else generated
        seconds = api.timings(answer)
        with self._lock:
            self.requests += 1
            if tokens:
                self.prompt_tokens += prompt
                self.generated_tokens += generated
            if seconds is not None:
                self.timed = True
                self.server_prompt += seconds[0]
                self.server_decode += seconds[1]

    def metrics(self, wall: float, *, classify: bool) -> GenerateMetrics:
        if self.timed and self.server_prompt + self.server_decode > 0:
            prefill = wall * self.server_prompt / (self.server_prompt + self.server_decode)
        else:
            prefill = wall if classify else 0.0
        return GenerateMetrics(prompt_tokens=self.prompt_tokens,
                               generated_tokens=0 if classify else self.generated_tokens,
                               prefill_seconds=prefill, decode_seconds=wall - prefill,
                               total_seconds=wall)

