"""``http``: an OpenAI-compatible server wrapped as a `TextModel` (standard library only)."""

from __future__ import annotations

from inference.model import TextModel
from inference.options import LoadOptions


class HttpBackend:
    """Models served by llama.cpp's server, vLLM, Ollama or any OpenAI-compatible server.

    ``load_model`` takes the server's base URL (``http://host:8080/v1``), with
    the served model's name as the fragment (``...#qwen3-4b``) when the server
    serves several.
    """

    @property
    def name(self) -> str:
        return "http"

    def available(self) -> bool:
        return True

    def load_model(self, path: str, options: LoadOptions | None = None) -> TextModel:
        from inference.backends._http_model import HttpModel

        return HttpModel.connect(path, options or LoadOptions())

    def __repr__(self) -> str:
        return "HttpBackend()"
