"""Chat templates render in Jinja's sandbox: no way to Python internals."""

from __future__ import annotations

import pytest

from inference import GenerationError, Message
from inference._chat import render_chat

MESSAGES = [Message("system", "be brief"), Message("user", "hi")]


def test_a_template_renders_messages_and_the_generation_prompt():
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}" \
               "{% if add_generation_prompt %}[assistant]{% endif %}"
    assert render_chat(template, MESSAGES, bos_token="<s>") == \
        "<s>[system]be brief[user]hi[assistant]"


def test_no_template_uses_the_plain_fallback():
    assert render_chat(None, MESSAGES) == "system: be brief\nuser: hi\nassistant:"


@pytest.mark.parametrize("attack", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
    "{{ messages.append(1) }}",
    "{% for m in messages %}{{ m.__class__.__base__.__subclasses__() }}{% endfor %}",
])
def test_a_template_reaching_python_internals_is_refused(attack):
    with pytest.raises(GenerationError, match=r"chat template failed"):
        render_chat(attack, MESSAGES)


def test_raise_exception_in_a_template_is_a_clear_error():
    with pytest.raises(GenerationError, match="only user and assistant"):
        render_chat("{{ raise_exception('only user and assistant') }}", MESSAGES)
