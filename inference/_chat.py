"""Render a model's chat template safely.

Chat templates ship inside model files and are Jinja: rendered in Jinja's
immutable sandbox, a template cannot reach Python internals (the class of bug
behind CVE-2024-34359). jinja2 is imported here, lazily, by backends only.
"""

from __future__ import annotations

from collections.abc import Sequence

from inference.errors import GenerationError
from inference.types import Message

#: Used when a model carries no template of its own.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def render_chat(
    template: str | None,
    messages: Sequence[Message],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for ``messages`` under ``template`` (or the fallback)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise GenerationError(f"chat template refused the messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        compiled = env.from_string(template or FALLBACK_TEMPLATE)
        return compiled.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except TemplateError as exc:  # SecurityError included
        raise GenerationError(f"chat template failed: {exc}") from exc
