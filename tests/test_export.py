"""`specialist export`: merged weights, GGUF and Ollama, on LoRA runs over the tiny models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from specialist.models.template import DEFAULT_CHAT_TEMPLATE, render_prompt
from specialist.run_folder import read_summary
from tests.helpers import make_adapter_run


@pytest.fixture(scope="module")
def chat_run(lively_chat_model, tmp_path_factory) -> Path:
    return make_adapter_run(lively_chat_model, tmp_path_factory.mktemp("run-chat"))


@pytest.fixture(scope="module")
def base_run(tiny_base_model, tmp_path_factory) -> Path:
    return make_adapter_run(tiny_base_model, tmp_path_factory.mktemp("run-base"))


def peft_logits(run: Path, ids: torch.Tensor) -> torch.Tensor:
    from specialist.models.resolve import load_model

    loaded = load_model(str(run), dtype="float32")
    assert type(loaded.model).__name__.startswith("Peft")
    with torch.no_grad():
        return loaded.model(ids).logits


# ---------------------------------------------------------------- merged
@pytest.mark.parametrize("which", ["chat_run", "base_run"])
def test_merged_folder_loads_alone_and_matches_the_adapter(which, request, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specialist.export.build import export
    from specialist.models.template import stop_token_ids

    run = request.getfixturevalue(which)
    out = tmp_path / "merged"
    assert export(str(run), "merged", out).files
    assert not (out / "adapter_config.json").exists() and (out / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("Jak długo trwa wysyłka?")["input_ids"]])
    with torch.no_grad():
        merged = model(ids).logits
    torch.testing.assert_close(merged, peft_logits(run, ids), atol=1e-4, rtol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(read_summary(run).base_model, dtype=torch.float32)
    with torch.no_grad():
        assert (base(ids).logits - merged).abs().max() > 1e-2  # the adapter really is in there
    assert tok.chat_template  # the template the run trained with travels with the weights
    if which == "base_run":
        assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    # plain transformers generation stops at the end of the turn
    assert list(np.atleast_1d(model.generation_config.eos_token_id)) == stop_token_ids(tok)


def test_existing_out_is_refused_unless_overwrite(chat_run, tmp_path, run_cli):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("export", "--model", str(chat_run), "--format", "merged", "--out", str(out))
    assert proc.exit_code == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    proc = run_cli("export", "--model", str(chat_run), "--format", "merged", "--out", str(out), "--overwrite", "--json")
    assert proc.exit_code == 0, proc.stderr
    assert json.loads(proc.stdout)["format"] == "merged"
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folders left behind


def test_a_failed_export_leaves_nothing(chat_run, tmp_path, monkeypatch):
    import specialist.models.gguf_writer as ge
    from specialist.export.build import export

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(ge, "write_gguf", boom)
    with pytest.raises(RuntimeError):
        export(str(chat_run), "gguf", tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


def test_bad_format_and_outtype(chat_run, tmp_path, run_cli):
    proc = run_cli("export", "--model", str(chat_run), "--format", "onnx", "--out", str(tmp_path / "x"))
    assert proc.exit_code == 2 and "merged" in proc.stderr
    proc = run_cli("export", "--model", str(chat_run), "--format", "gguf", "--outtype", "q4", "--out",
                   str(tmp_path / "x"))
    assert proc.exit_code == 2 and "q8_0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("export", "--model", str(chat_run), "--format", "merged", "--outtype", "q8_0", "--out",
                   str(tmp_path / "x"))
    assert proc.exit_code == 2 and "auto, f32, bf16, f16" in proc.stderr and not (tmp_path / "x").exists()


def test_a_lora_merged_into_a_half_precision_base_stays_float32(tiny_chat_model, tmp_path):
    """A LoRA's change is mostly below bf16's step: rounding the merged weights would drop it."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    from specialist.export.merged import merged_dtype

    config = AutoConfig.from_pretrained(tiny_chat_model)
    config.dtype = "bfloat16"
    config.save_pretrained(tmp_path / "bf16-base")
    lora = SimpleNamespace(source=SimpleNamespace(weights=str(tmp_path / "bf16-base"), adapter="adapter"))
    plain = SimpleNamespace(source=SimpleNamespace(weights=str(tmp_path / "bf16-base"), adapter=None))
    assert merged_dtype(lora)[0] == torch.float32 and "exactly" in merged_dtype(lora)[1]
    assert merged_dtype(plain)[0] == torch.bfloat16  # nothing merged: the base as it is
    assert merged_dtype(lora, "bf16")[0] == torch.bfloat16
    # why: a weight plus a change of 0.1% of it, rounded to bf16, is mostly the weight unchanged
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(4096, generator=gen).to(torch.bfloat16).float()
    change = weight * 1e-3 * torch.randn(4096, generator=gen)
    lost = ((weight + change).to(torch.bfloat16).float() == weight).float().mean()
    assert lost > 0.9  # 98.9% here


# ---------------------------------------------------------------- GGUF
def read_gguf(path: Path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def merged_state(run: Path) -> dict[str, torch.Tensor]:
    from specialist.models.gguf_writer import load_merged

    return {k: v.float() for k, v in load_merged(str(run)).model.state_dict().items()}


def export_gguf(run: Path, out: Path, outtype: str = "f16") -> Path:
    from specialist.export.build import export

    result = export(str(run), "gguf", out, outtype)
    (name,) = [f for f in result.files if f.endswith(".gguf")]
    return out / name


def test_gguf_llama_metadata_vocab_and_weights(chat_run, tmp_path):
    from transformers import AutoTokenizer

    path = export_gguf(chat_run, tmp_path / "g")
    fields, tensors = read_gguf(path)
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2 and fields["llama.embedding_length"] == 64
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    tok = AutoTokenizer.from_pretrained(chat_run / "adapter")
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.tokens"][:3] == tok.convert_ids_to_tokens([0, 1, 2])
    assert len(fields["tokenizer.ggml.tokens"]) == len(tok)
    assert len(fields["tokenizer.ggml.merges"]) > 40_000
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.chat_template"] == tok.chat_template
    # tied embeddings: no separate output matrix; every layer's projections are there
    assert "output.weight" not in tensors and "token_embd.weight" in tensors
    assert {f"blk.{i}.{n}.weight" for i in range(2) for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                                               "ffn_up", "ffn_down", "attn_norm",
                                                              "ffn_norm")} <= set(tensors)
    state = merged_state(chat_run)
    q = torch.from_numpy(np.array(tensors["blk.1.attn_q.weight"].data, dtype=np.float32))
    expected = state["model.layers.1.self_attn.q_proj.weight"]
    # llama.cpp's RoPE pairs neighbouring dims: rows are interleaved per head, values are the merged ones (f16)
    n_head, rows = 4, expected.shape[0]
    interleaved = expected.reshape(n_head, 2, rows // n_head // 2, -1).swapaxes(1, 2).reshape(expected.shape)
    torch.testing.assert_close(q, interleaved, atol=2e-3, rtol=1e-3)
    assert not torch.allclose(q, expected, atol=2e-3)


def test_a_kept_vocabulary_gguf_holds_the_kept_tokens_in_order(chat_run, tmp_path):
    """The llama.cpp engine's GGUF of a specialist-sized head: GGUF id i is token kept[i], in
    the vocabulary arrays, the embedding rows and the special token ids."""
    from transformers import AutoTokenizer

    from specialist.errors import SpecialistError
    from specialist.models.gguf_writer import load_merged, save_gguf

    tok = AutoTokenizer.from_pretrained(chat_run / "adapter")
    kept = sorted({*range(0, 3000, 7), tok.eos_token_id, *tok.all_special_ids})
    loaded = load_merged(str(chat_run))
    save_gguf(loaded, tmp_path / "kept.gguf", "f16", kept=kept)
    fields, tensors = read_gguf(tmp_path / "kept.gguf")
    assert fields["tokenizer.ggml.tokens"] == tok.convert_ids_to_tokens(kept)
    assert fields["tokenizer.ggml.eos_token_id"] == kept.index(tok.eos_token_id)
    embd = np.array(tensors["token_embd.weight"].data, dtype=np.float32)
    full = loaded.model.get_input_embeddings().weight.detach().float().numpy()
    np.testing.assert_allclose(embd, full[kept], atol=2e-3, rtol=1e-3)
    with pytest.raises(SpecialistError, match="kept vocabulary"):
        save_gguf(loaded, tmp_path / "bad.gguf", "f16", kept=[len(tok) + 5])


def test_gguf_gemma3_norms_and_outtypes(base_run, tmp_path):
    import gguf

    state = merged_state(base_run)
    for outtype, qname in (("bf16", "BF16"), ("q8_0", "Q8_0")):
        fields, tensors = read_gguf(export_gguf(base_run, tmp_path / outtype, outtype))
        assert fields["general.architecture"] == "gemma3"
        assert fields["gemma3.attention.key_length"] == 16 and fields["gemma3.attention.sliding_window"] == 64
        assert fields["tokenizer.chat_template"] == DEFAULT_CHAT_TEMPLATE
        assert tensors["blk.0.attn_q.weight"].tensor_type.name == qname
        assert tensors["blk.0.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
        # Gemma's RMSNorm multiplies by (1 + w); llama.cpp by the stored value
        norm = np.array(tensors["blk.0.post_ffw_norm.weight"].data)
        np.testing.assert_allclose(norm, state["model.layers.0.post_feedforward_layernorm.weight"].numpy() + 1,
                                   atol=1e-6)
        assert {"blk.0.attn_q_norm.weight", "blk.0.attn_k_norm.weight",
                "blk.0.post_attention_norm.weight"} <= set(tensors)


# ---------------------------------------------------------------- Ollama
def fill_go_template(template: str, system: str | None, prompt: str, response: str | None) -> str:
    """Evaluates the one shape of Go template the exporter writes; response=None gives the
    prompt Ollama sends before the model answers."""
    m = re.fullmatch(r"\{\{ if \.System \}\}(.*)\{\{ else \}\}(.*)\{\{ end \}\}\{\{ \.Response \}\}(.*)", template,
                     re.S)
    assert m, template
    body = (m.group(1) if system else m.group(2)).replace("{{ .System }}", system or "").replace("{{ .Prompt }}",
                                                                                                 prompt)
    return body if response is None else body + response + m.group(3)


@pytest.mark.parametrize("which", ["chat_run", "base_run"])
def test_ollama_modelfile_template_stops_and_system(which, request, tmp_path, run_cli):
    from specialist.models.resolve import load_tokenizer

    run = request.getfixturevalue(which)
    system = tmp_path / "system.txt"
    system.write_text("Jesteś baristą.\n", encoding="utf-8")
    out = tmp_path / "ollama"
    if which == "chat_run":
        proc = run_cli("export", "--model", str(run), "--format", "ollama", "--out", str(out), "--outtype", "q8_0",
                       "--system-prompt", str(system))
        assert proc.exit_code == 0, proc.stderr
    else:
        from specialist.export.build import export

        export(str(run), "ollama", out, "q8_0", system="Jesteś baristą.")
    text = (out / "Modelfile").read_text(encoding="utf-8")
    gguf_files = [p.name for p in out.glob("*.gguf")]
    assert gguf_files and text.startswith(f"FROM ./{gguf_files[0]}\n")
    assert 'SYSTEM """Jesteś baristą."""' in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    stops = re.findall(r'PARAMETER stop (".*")', text)
    stops = [json.loads(s) for s in stops]
    tok = load_tokenizer(str(run))
    for sys_text in ("Jesteś baristą.", None):
        msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + [{"role": "user", "content": "Cześć"}]
        expected = render_prompt(tok, msgs)
        filled = fill_go_template(template, sys_text, "Cześć", None)
        # byte-identical to training's prompt, except a leading BOS that llama.cpp adds itself
        bos = expected[: len(expected) - len(filled)]
        assert bos + filled == expected and bos in ("", tok.bos_token)
    full = tok.apply_chat_template([{"role": "user", "content": "Cześć"}, {"role": "assistant", "content": "Hej!"}],
                                   tokenize=False)
    assert full.startswith(bos + fill_go_template(template, None, "Cześć", "Hej!").rstrip("\n"))
    if which == "chat_run":
        assert stops == ["<|im_end|>"]
    else:  # the default template: EOS and the next turn's headers
        assert stops[0] == "<|endoftext|>" and "### User:" in stops


# ---------------------------------------------------------------- llama.cpp
LLAMA_RUNNER = r"""
import json, sys, contextlib, io
from llama_cpp import Llama
path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
stops = set(json.loads(sys.argv[4]))
# verbose=False crashes in llama-cpp-python 0.3.x (its log callback); keep verbose and send the log away
with contextlib.redirect_stderr(io.StringIO()):
    llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=True, seed=0)
    out = []
    for ids in prompts:
        toks = []
        for t in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            if t in stops or len(toks) >= n:
                break
            toks.append(t)
        out.append(toks)
    llm.close()
print(json.dumps(out))
"""


AMX_CRASH = ("llama.cpp (llama-cpp-python 0.3.36, native build) segfaults in ggml_backend_amx_mul_mat on quantized "
             "Gemma 3 weights on AMX CPUs; `make llama-cpp` builds it without the AMX kernels (and "
             "--engine llama.cpp turns llama.cpp's extra buffer types off on AMX builds)")


def importlib_find(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def llama_cpp_greedy(gguf_path: Path, prompts: list[list[int]], n: int, stops: list[int]) -> list[list[int]]:
    """Greedy tokens from llama.cpp, in a child process: a native crash must fail the test,
    not kill the test run."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python)")
    proc = subprocess.run([sys.executable, "-c", LLAMA_RUNNER, str(gguf_path), json.dumps(prompts), str(n),
                           json.dumps(stops)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == -11 and importlib_find("llama_cpp"):
        pytest.xfail(AMX_CRASH)
    assert proc.returncode == 0, f"llama.cpp exited with {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


PROMPTS = ["What is the capital of France?", "Jak długo trwa wysyłka?", "Poleć kawę do espresso."]


def assert_llama_cpp_matches_pytorch(model_ref: str, gguf_path: Path, n: int, dtype: str = "float32") -> None:
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model
    from specialist.models.template import build_messages

    gen = TorchGenerator(load_model(model_ref, dtype=dtype, merge_adapter=True))
    settings = GenerationSettings(max_new_tokens=n)
    convs = [build_messages(p) for p in PROMPTS]
    expected = [a.text for a in gen.generate(convs, settings, batch_size=1)]
    tokens = llama_cpp_greedy(gguf_path, [gen.prompt_ids(c) for c in convs], n, gen.eos_ids)
    got = []
    for ids in tokens:  # the same stop handling (end-of-turn, the template's stop strings) as PyTorch
        row = gen.row_decoder(0, settings)
        for t in ids:
            row.push(t)
        got.append(row.text.rstrip() if row.done else row.text.strip())
    assert got == expected
    assert sum(len(t) for t in expected) > 20  # real answers were compared, not empty ones


def test_llama_cpp_answers_like_pytorch_tiny_llama(chat_run, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    assert_llama_cpp_matches_pytorch(str(chat_run), export_gguf(chat_run, tmp_path / "g", "f16"), n=16)


@pytest.mark.slow
@pytest.mark.parametrize("outtype", ["f16", "bf16"])
def test_llama_cpp_answers_like_pytorch_gemma3_270m(outtype, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    assert_llama_cpp_matches_pytorch("gemma-3-270m", export_gguf_ref("gemma-3-270m", tmp_path / "g", outtype), n=24)


@pytest.mark.slow
def test_llama_cpp_answers_like_pytorch_smollm2(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    assert_llama_cpp_matches_pytorch("smollm2-135m-instruct",
                                     export_gguf_ref("smollm2-135m-instruct", tmp_path / "g", "f16"), n=24)


def export_gguf_ref(ref: str, out: Path, outtype: str) -> Path:
    from specialist.export.build import export

    result = export(ref, "gguf", out, outtype)
    return out / next(f for f in result.files if f.endswith(".gguf"))


@pytest.mark.slow
def test_llama_cpp_answers_like_pytorch_gemma3_270m_q8_0(tmp_path):
    """Q8_0 weights go through llama.cpp's quantized matmul kernels (AMX where the CPU has it)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    assert_llama_cpp_matches_pytorch("gemma-3-270m", export_gguf_ref("gemma-3-270m", tmp_path / "g", "q8_0"), n=16)


@pytest.mark.slow
def test_llama_cpp_runs_the_packaged_gemma3_q4_k_m():
    """The Q4_K_M GGUF the embedded model ships as (not written by us): the AMX crash's witness."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from specialist.models.registry import KNOWN_MODELS

    gguf_path = KNOWN_MODELS["gemma-3-270m"].locate_gguf()
    (tokens,) = llama_cpp_greedy(gguf_path, [[2, 818, 5279, 529, 7001, 563]], 8, [1])
    assert len(tokens) == 8
