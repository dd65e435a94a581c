"""Which server answers the ``http`` backend, and its version: for the provenance of results.

Servers say so in different places; each is asked once, in this order, and the first
that answers wins:

- llama.cpp's ``llama-server``: ``GET /props`` holds ``build_info`` (``b6500-1d2f3a4``);
- vLLM: ``GET /version`` holds ``version``;
- Ollama: ``GET /api/version`` holds ``version``.

A server that answers none of them (llama-cpp-python's server, most hosted APIs) is
``("openai-compatible", "")``: the name of the protocol, the version unknown.
"""

from __future__ import annotations

from inference.backends._http_client import JsonClient
from inference.errors import GenerationError

UNKNOWN = ("openai-compatible", "")

#: (path below the server's root, the field holding the version, the engine's name)
_PROBES = (("/props", "build_info", "llama.cpp server"),
           ("/version", "version", "vllm"),
           ("/api/version", "version", "ollama"))


def server_engine(root: JsonClient) -> tuple[str, str]:
    """(engine name, version) of the server below ``root``; `UNKNOWN` when it says neither."""
    for path, field, name in _PROBES:
        try:
            answer = root.get(path)
        except GenerationError:  # 404, refused, not JSON: not this kind of server
            continue
        version = answer.get(field)
        if isinstance(version, str) and version:
            return name, version
    return UNKNOWN
