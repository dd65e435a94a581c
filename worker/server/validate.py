"""An input file read as one batch: its model, whether it classifies, and what is wrong
with it.

A batch is one inferq job on one model: the first line's ``model``. A file that is not
a batch at all (a line that is not JSON, a repeated or missing custom_id, a request to
another endpoint, a line without a model) fails in validation with every error's line
number, as OpenAI's does. Everything else is decided line by line when the job reads
the file (`jobs._formats.body_options`): each line's own parameters are honoured
(``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p``, ``stop``,
``seed``, ``labels``...), and a line that asks for what inferq cannot honour
(``logprobs``, ``tools``, ``n`` > 1, another model than the batch's) becomes a line of
the error file with its own code (``unsupported_parameter``, ``invalid_parameter``,
``mismatched_model``) while the rest of the batch runs. Nothing is silently ignored.

The inferq extension ``labels`` (a list of strings) makes a line a classification:
its output line carries the winning label as content and every label's probability
in ``label_probs``. A batch whose lines carry ``labels`` runs as a classify job;
``calibrate`` (``none``, ``length`` or ``batch``, jobs/calibrate.py) chooses how its
probabilities are calibrated: the first line's choice is the batch's, and a line
asking for another is an error line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jobs.spec import CALIBRATIONS

MAX_ERRORS = 50  #: errors reported for one file; the rest are counted
CONTENT = {"/v1/completions": "prompt", "/v1/chat/completions": "messages"}


@dataclass(slots=True)
class Plan:
    """What a batch file asks for: its model and op, or the errors that stop it."""

    model: str = ""
    lines: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    more_errors: int = 0
    classify: bool = False  #: some line carries ``labels``
    calibrate: str = "none"  #: the first line's ``calibrate`` (a line differing is an error line)

    def error(self, line: int | None, code: str, message: str, param: str | None = None
              ) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "line": line, "message": message,
                                "param": param})
        else:
            self.more_errors += 1

    @property
    def op(self) -> str:
        return "classify" if self.classify else "generate"


def plan(path: Path, endpoint: str, *, max_line_bytes: int = 8 * 2**20) -> Plan:
    """Read ``path`` line by line (never whole) as requests to ``endpoint``; a line
    over ``max_line_bytes`` is an error, skipped without being held."""
    result = Plan()
    ids: set[str] = set()
    seen = False  # a line named calibrate
    with open(path, "rb") as f:
        for number, raw in _lines(f, max_line_bytes):
            if raw is None:
                result.lines += 1
                result.error(number, "line_too_long", f"the line is over {max_line_bytes:,} "
                             "bytes, the longest request inferq reads")
                continue
            if not raw.strip():
                continue
            result.lines += 1
            request = _request(result, number, raw, endpoint, ids)
            if request is None:
                continue
            if request["body"].get("labels") is not None:
                result.classify = True
            calibrate = request["body"].get("calibrate")
            if calibrate in CALIBRATIONS and not seen:
                result.calibrate = calibrate
            seen = seen or calibrate is not None
    if result.lines == 0:
        result.error(None, "empty_file", "the input file holds no requests")
    return result


def _lines(f: IO[bytes], max_len: int) -> Iterator[tuple[int, bytes | None]]:
    """Each line's 1-based number and bytes; None for a line over ``max_len`` bytes,
    read past in pieces."""
    number = 0
    while line := f.readline(max_len + 1):
        number += 1
        if len(line) <= max_len or line.endswith(b"\n"):
            yield number, line
            continue
        while line and not line.endswith(b"\n"):
            line = f.readline(max_len + 1)
        yield number, None


def _request(result: Plan, number: int, raw: bytes, endpoint: str, ids: set[str]
             ) -> dict[str, Any] | None:
    try:
        request = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        result.error(number, "invalid_json", f"not a JSON object: {exc}")
        return None
    if not isinstance(request, dict):
        result.error(number, "invalid_json", "not a JSON object")
        return None
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        result.error(number, "missing_custom_id", "custom_id must be a non-empty string",
                     "custom_id")
    elif custom_id in ids:
        result.error(number, "duplicate_custom_id",
                     f"custom_id {custom_id!r} appears earlier in the file", "custom_id")
    else:
        ids.add(custom_id)
    if request.get("method", "POST") != "POST":
        result.error(number, "invalid_method", "method must be POST", "method")
    if request.get("url") != endpoint:
        result.error(number, "invalid_url", f"url is {request.get('url')!r}; this batch's "
                     f"endpoint is {endpoint}", "url")
        return None
    body = request.get("body")
    if not isinstance(body, dict):
        result.error(number, "invalid_body", "body must be a JSON object", "body")
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        result.error(number, "missing_model", "body.model must name a model", "body.model")
        return None
    if not result.model:
        result.model = model  # the batch's; a line naming another is an error line
    return request
