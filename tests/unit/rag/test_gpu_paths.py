"""GPU code paths, exercised on CPU: device resolution, the fp16/bf16 choices (with
`torch.cuda.is_available` mocked to take the CUDA branch without a GPU), and the transformers LLM
on a tiny randomly initialised model built here.

TEST FIXTURE: `tiny_model_dir` is a 2-layer Qwen2 (hidden size 64) with random weights and a 300-token byte-level BPE
tokenizer trained on three sentences. It produces meaningless text; it only exists so the real
load / generate / stream code runs without a download."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rag.adapters import device as device_mod  # noqa: E402
from rag.adapters import embedders  # noqa: E402
from rag.adapters import llm_transformers as lt  # noqa: E402
from rag.errors import ConfigError, LLMError, ModelError  # noqa: E402

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "How long is the warranty?"}]


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch reports one CUDA GPU (bf16-capable unless a test says otherwise)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return monkeypatch


# device resolution -------------------------------------------------------------------------

def test_cpu_machine_resolves_auto_to_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert device_mod.resolve_device("auto") == "cpu"
    assert embedders.resolve_device("auto") == "cpu"
    assert device_mod.resolve_device("CPU") == "cpu"


def test_cuda_requested_without_a_gpu_fails_with_the_value(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="'cuda:0'"):
        device_mod.resolve_device("cuda:0")
    with pytest.raises(ConfigError, match="'tpu'"):
        device_mod.resolve_device("tpu")


def test_auto_picks_cuda_when_torch_sees_a_gpu(fake_cuda):
    assert device_mod.resolve_device("auto") == "cuda"
    assert embedders.resolve_device("auto") == "cuda"
    assert device_mod.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="only 1 GPU"):
        device_mod.resolve_device("cuda:1")


# dtype choice ------------------------------------------------------------------------------

def test_dtype_is_fp32_on_cpu():
    assert lt.choose_dtype("cpu") == "float32"
    assert lt.choose_dtype("mps") == "float32"
    assert lt.choose_dtype("cpu", "bfloat16") == "bfloat16"
    with pytest.raises(ConfigError, match="'fp8'"):
        lt.choose_dtype("cpu", "fp8")


def test_dtype_on_cuda_prefers_bf16_then_fp16(fake_cuda):
    assert lt.choose_dtype("cuda") == "bfloat16"
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert lt.choose_dtype("cuda:0") == "float16"


# embedders: fp16 on CUDA, fp32 on CPU (the model libraries are replaced by recorders) ----------

class _Recorder:
    calls: list[dict] = []

    def __init__(self, *args, **kwargs):
        type(self).calls.append({"args": args, **kwargs})
        self.halved = False
        self.max_seq_length = 512

    def half(self):
        self.halved = True
        return self

    def encode(self, texts, **kwargs):
        return np.ones((len(texts), 4), dtype=np.float32)

    def encode_queries(self, texts, **kwargs):
        return np.ones((len(texts), 4), dtype=np.float32)

    encode_corpus = encode_queries


@pytest.fixture
def recorders(monkeypatch):
    _Recorder.calls = []
    flag = types.ModuleType("FlagEmbedding")
    flag.FlagModel = flag.BGEM3FlagModel = _Recorder
    st = types.ModuleType("sentence_transformers")
    st.SentenceTransformer = _Recorder
    monkeypatch.setitem(sys.modules, "FlagEmbedding", flag)
    monkeypatch.setitem(sys.modules, "sentence_transformers", st)
    monkeypatch.setattr(embedders, "_cache", {})
    return _Recorder


@pytest.mark.parametrize("cuda", [False, True])
def test_flag_embedder_uses_fp16_only_on_cuda(recorders, monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    emb = embedders.FlagEmbedder("/models/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", batch_size=8)
    emb.encode_corpus(["a passage"])
    call = recorders.calls[-1]
    assert call["use_fp16"] is cuda
    assert call["devices"] == ("cuda" if cuda else "cpu")


@pytest.mark.parametrize("cuda", [False, True])
def test_sentence_transformer_embedder_halves_only_on_cuda(recorders, monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    emb = embedders.SentenceTransformerEmbedder("/models/minilm", batch_size=8)
    emb.encode_queries(["a query"])
    model = next(iter(embedders._cache.values()))
    assert recorders.calls[-1]["device"] == ("cuda" if cuda else "cpu")
    assert model.halved is cuda


# the transformers LLM ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """TEST FIXTURE ONLY: a random 2-layer Qwen2 and a tiny tokenizer, built locally (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny-qwen2-random")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["The warranty is two years from purchase.", "保修期是两年。", "system user assistant"],
                            trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok.save_pretrained(path)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(2)  # a seed whose greedy output varies (others repeat one token)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return path


def test_local_llm_loads_lazily_on_cpu_in_fp32(tiny_model_dir):
    llm = lt.TransformersLLM(tiny_model_dir, n_ctx=256)
    assert llm.name == f"{tiny_model_dir.name} (transformers)"
    assert llm.info()["loaded"] is False
    llm.warm_up()
    info = llm.info()
    assert info["loaded"] is True and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["runtime"].startswith("transformers ")


def test_chat_and_stream_give_the_same_greedy_text(tiny_model_dir):
    llm = lt.TransformersLLM(tiny_model_dir, n_ctx=256)
    text = llm.chat(MESSAGES, max_tokens=12)
    assert isinstance(text, str)
    assert llm.last_timings["predicted_n"] <= 12
    pieces = list(llm.stream(MESSAGES, max_tokens=12))
    assert "".join(pieces) == text
    assert llm.last_timings["prompt_n"] > 0


def test_stop_strings_cut_the_answer(tiny_model_dir):
    llm = lt.TransformersLLM(tiny_model_dir, n_ctx=256)
    full = llm.chat(MESSAGES, max_tokens=20)
    assert len(set(full)) > 3, f"the fixture should produce varied text, got {full!r}"
    stop = full[4:6]
    expected = full[: full.find(stop)]
    assert llm.chat(MESSAGES, max_tokens=20, stop=[stop]) == expected
    assert "".join(llm.stream(MESSAGES, max_tokens=20, stop=[stop])) == expected


def test_closing_a_stream_early_stops_generation(tiny_model_dir):
    llm = lt.TransformersLLM(tiny_model_dir, n_ctx=256)
    stream = llm.stream(MESSAGES, max_tokens=200)
    next(stream, None)
    stream.close()  # joins the worker: generation stopped well before 200 tokens
    assert llm.last_timings["predicted_n"] < 200


def test_prompt_over_the_context_is_refused(tiny_model_dir):
    llm = lt.TransformersLLM(tiny_model_dir, n_ctx=4096)  # the model itself has 256 positions
    with pytest.raises(LLMError, match="exceeds the context of 256"):
        llm.chat(MESSAGES, max_tokens=250)


def test_cuda_branch_loads_in_bf16_on_cuda(fake_cuda, tiny_model_dir):
    seen = []

    def fake_load(path, device, dtype):
        seen.append((device, dtype))
        return lt._Loaded(None, None, device, dtype, 256, 0.0)

    fake_cuda.setattr(lt, "_load", fake_load)
    fake_cuda.setattr(lt, "_loaded", {})
    lt.TransformersLLM(tiny_model_dir).warm_up()
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    lt.TransformersLLM(tiny_model_dir, device="cuda:0").warm_up()
    lt.TransformersLLM(tiny_model_dir, device="cpu").warm_up()
    assert seen == [("cuda", "bfloat16"), ("cuda:0", "float16"), ("cpu", "float32")]


def test_bad_model_directory_and_options(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        lt.TransformersLLM(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="'int4'"):
        lt.TransformersLLM(tmp_path, dtype="int4")


@pytest.mark.parametrize(("pieces", "stop", "expected"), [
    (["Hel", "lo wor", "ld"], ["wor"], "Hello "),
    (["ab", "c", "de"], ["cd"], "ab"),
    (["no stop here"], ["zz"], "no stop here"),
    (["x", "y"], None, "xy"),
    (["a\n", "\nb"], ["\n\n"], "a"),
])
def test_stop_trimmer(pieces, stop, expected):
    trimmer = lt._StopTrimmer(stop)
    out = "".join(trimmer.feed(p) for p in pieces) + trimmer.finish()
    assert out == expected
