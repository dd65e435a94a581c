"""The ``http`` backend against llama-cpp-python's real server on the tiny model.

Retries, timeouts and status handling run against small stdlib servers on
loopback that misbehave on purpose.

The tiny model emits random bytes. llama-cpp-python's server drops multi-byte
characters from streamed output that its non-streamed output keeps, so tests
that compare streamed text with anything else use prompts whose reference
output is ASCII, and assert that first.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import inference
from inference import GenerateOptions, LoadOptions, Message
from inference.backends._http_model import HttpModel
from inference.errors import GenerationError, ModelLoadError
from inference.testing import TinyLlama
from inference.testing.tiny_llama import encode

pytestmark = pytest.mark.llama
pytest.importorskip("llama_cpp.server")

N_CTX = 512
ASCII_PROMPTS = ("Hello", "Once upon a time", "1, 2, 3,", "x", "Question: why?")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def server_url(tiny_model: TinyLlama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server on a free loopback port, serving the tiny model."""
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "stderr.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model.gguf_path),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX),
               "--n_threads", "1", "--verbose", "False"]
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get_json(url + "/models")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama-cpp-python's server did not start:\n{log.read_text()}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def model(server_url: str) -> Iterator[HttpModel]:
    with HttpModel.connect(server_url, LoadOptions()) as m:
        yield m


@pytest.fixture(scope="module")
def local(tiny_model: TinyLlama) -> Iterator[Any]:
    """The same GGUF in the local engine, every logit kept, for references."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(tiny_model.gguf_path), n_ctx=N_CTX, logits_all=True,
                          verbose=False)
    yield llm
    llm.close()


def _local_greedy(llm: Any, prompt: str, max_tokens: int) -> str:
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1,
                                top_p=1.0, min_p=0.0, repeat_penalty=1.0, stop=[])
    text: str = out["choices"][0]["text"]
    return text


def _text(tokens: Iterator[inference.Token]) -> str:
    return "".join(t.text for t in tokens)


# -- against llama-cpp-python's server ------------------------------------------------


def test_greedy_generate_equals_the_local_engines_greedy_output(model: HttpModel,
                                                                local: Any) -> None:
    reference = _local_greedy(local, "Once upon a time", 12)
    assert reference.isascii()
    assert _text(model.generate("Once upon a time", GenerateOptions(max_tokens=12))) == reference
    metrics = model.metrics()
    assert metrics.generated_tokens == 12
    assert metrics.total_seconds >= metrics.prefill_seconds > 0


def test_max_tokens_ends_generation_with_finish_reason_length(model: HttpModel) -> None:
    [result] = model.batch_generate(["Hello"], GenerateOptions(max_tokens=5))
    assert result.ok
    assert result.finish_reason == "length"
    assert model.metrics().generated_tokens == 5
    assert result.prompt_tokens == len(encode("Hello"))


def test_stop_strings_end_generation_before_the_stop_string(model: HttpModel,
                                                            local: Any) -> None:
    full = _local_greedy(local, "Once upon a time", 12)
    stop = full[4:6]
    options = GenerateOptions(max_tokens=12, stop_strings=(stop,))
    assert _text(model.generate("Once upon a time", options)) == full[: full.index(stop)]


def test_seeded_sampling_is_reproducible(model: HttpModel) -> None:
    options = GenerateOptions(max_tokens=16, temperature=1.0, seed=1234)
    first = _text(model.generate("Once upon a time", options))
    assert first == _text(model.generate("Once upon a time", options))


def test_stop_tokens_are_refused_when_the_server_sends_no_token_ids(model: HttpModel) -> None:
    with pytest.raises(inference.UnsupportedOperation, match="token ids"):
        list(model.generate("Hello", GenerateOptions(max_tokens=4, stop_tokens=(65,))))


def test_chat_streams_the_same_reply_as_a_non_streamed_chat_completion(
    model: HttpModel, server_url: str
) -> None:
    body = {"model": model.model_id, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
            "repeat_penalty": 1.0}
    request = urllib.request.Request(server_url + "/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        expected = json.load(resp)["choices"][0]["message"]["content"]
    assert expected and expected.isascii()
    reply = _text(model.chat([Message("user", "Hi")], GenerateOptions(max_tokens=8)))
    assert reply == expected


def test_classify_returns_the_local_engines_next_token_and_errors_per_prompt(
    model: HttpModel, local: Any
) -> None:
    prompts = ["Hello", "", "a" * (N_CTX + 10), "Once upon a time", "x"]
    results = model.classify(prompts)
    for index in (0, 3, 4):
        assert results[index].ok
        assert results[index].token is not None
        assert results[index].token.text == _local_greedy(local, prompts[index], 1)
        assert results[index].prompt_tokens == len(encode(prompts[index]))
    assert results[1].error is not None and results[1].error.code == "empty_prompt"
    assert results[2].error is not None and results[2].error.code == "prompt_too_long"
    assert results[2].error.index == 2


def test_classify_scores_labels_over_their_full_token_sequence(model: HttpModel,
                                                               local: Any) -> None:
    labels = ("yes", "no", "maybe")
    [result] = model.classify(["Is it raining? "], GenerateOptions(labels=labels))
    assert result.ok and result.label_probs is not None
    # Reference: the local engine's logits at every position of prompt + label.
    expected: dict[str, float] = {}
    for label in labels:
        ids = encode("Is it raining? " + label)
        local.reset()
        local.eval(ids)
        first = len(ids) - len(label)
        expected[label] = sum(_log_softmax(local.scores[k - 1], ids[k])
                              for k in range(first, len(ids)))
    top = max(expected.values())
    total = sum(math.exp(v - top) for v in expected.values())
    for label in labels:
        assert result.label_probs[label] == pytest.approx(
            math.exp(expected[label] - top) / total, abs=1e-3)
    assert result.label == max(labels, key=lambda label: expected[label])


def _log_softmax(logits: Any, index: int) -> float:
    top = float(max(logits))
    return float(logits[index]) - top - math.log(sum(math.exp(float(x) - top) for x in logits))


def test_batch_generate_returns_results_in_input_order_equal_to_generate(
    model: HttpModel,
) -> None:
    options = GenerateOptions(max_tokens=10)
    results = model.batch_generate(list(ASCII_PROMPTS), options)
    sequential = [_text(model.generate(p, options)) for p in ASCII_PROMPTS]
    assert all(r.ok and r.text.isascii() for r in results)
    assert [r.text for r in results] == sequential


def test_info_describes_a_remote_model(model: HttpModel) -> None:
    info = model.info()
    assert info.architecture == "remote"
    assert model.model_type == "remote"


def test_the_registry_loads_a_url_with_the_http_backend(server_url: str) -> None:
    with inference.load_model(server_url, LoadOptions(backend="http")) as loaded:
        assert isinstance(loaded, HttpModel)
        assert _text(loaded.generate("Hello", GenerateOptions(max_tokens=3)))


def test_a_fragment_naming_an_unknown_model_lists_the_served_ids(
    server_url: str, model: HttpModel
) -> None:
    with pytest.raises(ModelLoadError, match="served: ") as caught:
        HttpModel.connect(server_url + "#no-such-model", LoadOptions())
    assert model.model_id in str(caught.value)


def test_a_fragment_naming_the_served_model_selects_it(server_url: str,
                                                       model: HttpModel) -> None:
    chosen = HttpModel.connect(f"{server_url}#{model.model_id}", LoadOptions())
    assert chosen.model_id == model.model_id


# -- connection errors ---------------------------------------------------------------


def test_connecting_where_nothing_listens_names_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(ModelLoadError, match="Connection refused") as caught:
        HttpModel.connect(url, LoadOptions(), attempts=2, backoff=0.01)
    assert url in str(caught.value)


@pytest.mark.parametrize("url", ["file:///tmp/model.gguf", "ftp://host/v1", "models/x.gguf"])
def test_a_url_that_is_not_http_is_rejected(url: str) -> None:
    with pytest.raises(ModelLoadError, match="http"):
        HttpModel.connect(url, LoadOptions())


# -- retries and timeouts, against servers that misbehave ------------------------------


class _FakeServer:
    """A loopback server listing one model; ``answer`` decides each POST's reply."""

    def __init__(self,
                 answer: Callable[[int], tuple[int, dict[str, Any] | bytes] | None]) -> None:
        self.posts = 0
        self.auth: list[str] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.auth.append(self.headers.get("Authorization", ""))
                self._reply(200, {"object": "list", "data": [{"id": "fake"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.auth.append(self.headers.get("Authorization", ""))
                fake.posts += 1
                reply = answer(fake.posts)
                if reply is None:  # hang until released, then drop the connection
                    fake.release.wait(10)
                    return
                self._reply(*reply)

            def _reply(self, status: int, body: dict[str, Any] | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever)

    def __enter__(self) -> _FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


_COMPLETION = {"choices": [{"text": "ok", "index": 0, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 2, "completion_tokens": 1}}


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "server_error"}}


def _connect(url: str, **kwargs: Any) -> HttpModel:
    return HttpModel.connect(url, LoadOptions(), backoff=0.01, **kwargs)


def test_a_server_failing_twice_with_503_then_answering_succeeds() -> None:
    with _FakeServer(lambda n: _error(503, "busy") if n <= 2 else (200, _COMPLETION)) as fake:
        [result] = _connect(fake.url).batch_generate(["hi"])
    assert result.ok and result.text == "ok"
    assert fake.posts == 3


def test_a_server_always_answering_503_fails_after_every_attempt() -> None:
    with _FakeServer(lambda n: _error(503, "overloaded")) as fake:
        model = _connect(fake.url, attempts=4)
        with pytest.raises(GenerationError, match="503: overloaded"):
            list(model.generate("hi"))
    assert fake.posts == 4


def test_a_400_is_not_retried_and_carries_the_servers_message() -> None:
    with _FakeServer(lambda n: _error(400, "bad temperature")) as fake:
        model = _connect(fake.url)
        with pytest.raises(GenerationError, match="HTTP 400: bad temperature"):
            list(model.generate("hi"))
        [result] = model.batch_generate(["hi"])
    assert result.error is not None and result.error.code == "engine_error"
    assert fake.posts == 2


def test_a_server_slower_than_the_timeout_gives_the_row_a_timeout_error() -> None:
    with _FakeServer(lambda n: None) as fake:
        model = _connect(fake.url, timeout=0.3, attempts=2)
        start = time.monotonic()
        [result] = model.batch_generate(["hi"])
        assert time.monotonic() - start < 3
    assert result.error is not None and result.error.code == "server_error"
    assert "timed out" in str(result.error)
    assert fake.posts == 2


def test_a_server_that_went_down_gives_every_row_an_error_naming_it() -> None:
    with _FakeServer(lambda n: (200, _COMPLETION)) as fake:
        model = _connect(fake.url, attempts=2)
    results = model.batch_generate(["a", "b", "c"])
    classified = model.classify(["a", "b"], GenerateOptions(labels=("x", "y")))
    for result in [*results, *classified]:
        assert result.error is not None and result.error.code == "server_error"
        assert fake.url in str(result.error) and "refused" in str(result.error)
    assert [r.error.index for r in results if r.error] == [0, 1, 2]
    assert all(r.finish_reason == "error" for r in results)


def test_an_answer_that_is_not_json_gives_the_row_an_error_quoting_it() -> None:
    with _FakeServer(lambda n: (200, b"<html>proxy error</html>")) as fake:
        [result] = _connect(fake.url).batch_generate(["hi"])
    assert result.error is not None and result.error.code == "server_error"
    assert "not JSON" in str(result.error) and "proxy error" in str(result.error)


def test_an_answer_without_choices_gives_the_row_an_error_quoting_it() -> None:
    with _FakeServer(lambda n: (200, {"status": "ok"})) as fake:
        model = _connect(fake.url)
        [generated] = model.batch_generate(["hi"])
        [classified] = model.classify(["hi"])
    for result in (generated, classified):
        assert result.error is not None and result.error.code == "server_error"
        assert "'status': 'ok'" in str(result.error)


def test_the_api_key_is_sent_as_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERQ_HTTP_API_KEY", "sekret")
    with _FakeServer(lambda n: (200, _COMPLETION)) as fake:
        _connect(fake.url).batch_generate(["hi"])
    assert fake.auth == ["Bearer sekret", "Bearer sekret"]  # GET /models, POST
