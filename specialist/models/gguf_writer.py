"""A Hugging Face causal LM (weights already merged) → one GGUF file that llama.cpp loads: what
`specialist export --format gguf/ollama` writes and what --engine llama.cpp caches and runs.

Written with the `gguf` package: GGUFWriter for the file, its tensor-name maps
(get_tensor_name_map / MODEL_ARCH) for the tensor names, SpecialVocab for special token ids,
merges and the chat template. What llama.cpp expects beyond the names, per architecture:

- Llama: q_proj/k_proj rows are reordered from Hugging Face's rotate-half RoPE layout to the
  interleaved pairs llama.cpp's RoPE uses.
- Gemma 3: Hugging Face stores RMSNorm weights as w with y = x * (1 + w); llama.cpp multiplies
  by the stored weight, so 1 is added. llama.cpp derives the sliding-window layers itself
  (every 6th layer global, as in every released Gemma 3).

The vocabulary: when the base model was converted from a GGUF (the known models are; the cached
folder names its source) the original tokenizer arrays are carried over exactly — they hold
llama.cpp's own pre-tokenizer name and SentencePiece scores that tokenizer.json does not.
Otherwise they are built from the tokenizer: byte-level BPE as "gpt2" (tokens, types, merges),
SentencePiece-style (byte-fallback BPE, Unigram) as "llama" through gguf.LlamaHfVocab.

With `kept` (a specialist-sized head, models/vocab_head.py), the file holds only the kept
tokens: the vocabulary arrays, the embedding/output rows and the special token ids are those
of the kept ids in order (GGUF id i is token kept[i]). llama.cpp then projects onto the kept
rows only, but cannot read a token outside them: such a file is for the llama.cpp engine,
which feeds the prompt as embedding vectors (inference/llama_cpp_engine.py), not for export."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specialist.errors import SpecialistError
from specialist.models.resolve import LoadedModel, load_model

OUTTYPES = ("f16", "bf16", "q8_0", "q4_0")

_FILE_TYPES = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
_TOKEN_NORMAL, _TOKEN_CONTROL, _TOKEN_USER_DEFINED, _TOKEN_UNUSED = 1, 3, 4, 5


WRITES = ("llama", "gemma3_text", "gemma3")  # the model_type values (Hugging Face config) written here


def _arch(config: Any):
    import gguf

    arches = {"llama": gguf.MODEL_ARCH.LLAMA, "gemma3_text": gguf.MODEL_ARCH.GEMMA3, "gemma3": gguf.MODEL_ARCH.GEMMA3}
    model_type = getattr(config, "model_type", None)
    if model_type not in arches:
        raise SpecialistError(f"GGUF export supports the Llama and Gemma 3 architectures, not {model_type!r}; "
                              "use --format merged for others", exit_code=2)
    return arches[model_type]


def _rope_theta(config: Any, layer_type: str = "full_attention", default: float = 10000.0) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if layer_type in params and isinstance(params[layer_type], dict):
        params = params[layer_type]
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta or getattr(config, "rope_theta", None) or default)


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _write_hparams(writer: Any, config: Any, arch: Any, outtype: str, vocab_size: int) -> None:
    import gguf

    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, _head_dim(config)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(kv_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_file_type(getattr(gguf.LlamaFileType, _FILE_TYPES[outtype]))
    if arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_vocab_size(vocab_size)
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
    else:  # Gemma 3
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        if getattr(config, "sliding_window", None):
            writer.add_sliding_window(int(config.sliding_window))


def _llama_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    # rotate-half (first half / second half of each head) → interleaved pairs
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model: Any, arch: Any, kept: Sequence[int] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, float32 tensor) for every weight llama.cpp needs; with `kept`, the
    embedding and output matrices hold the kept rows only."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(arch, int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if "rotary_emb" in hf_name or (tied and hf_name.startswith("lm_head")):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise SpecialistError(f"GGUF export: no GGUF name for tensor {hf_name!r} ({arch.name})")
        data = tensor.detach().to(torch.float32).cpu()
        if kept is not None and (hf_name.endswith("embed_tokens.weight") or hf_name.startswith("lm_head")):
            data = data[torch.as_tensor(list(kept), dtype=torch.long)]
        if arch == gguf.MODEL_ARCH.LLAMA:
            if hf_name.endswith("q_proj.weight"):
                data = _llama_permute(data, config.num_attention_heads)
            elif hf_name.endswith("k_proj.weight"):
                data = _llama_permute(data, config.num_key_value_heads)
        elif hf_name.endswith("norm.weight"):  # Gemma: y = x * (1 + w)
            data = data + 1.0
        yield name, data


def _encode(data: torch.Tensor, outtype: str) -> tuple[np.ndarray, Any]:
    """(array, GGML type): vectors (norms) stay F32 as llama.cpp keeps them; Q8_0 and Q4_0 need
    rows in blocks of 32 and fall back to F16 otherwise. Q4_0 quantizes every matrix, the tied
    embedding / output head included (llama.cpp's `--pure`): the smallest and fastest file on a
    CPU, but round-to-nearest 4-bit weights can break a small model's answers (they do for
    Gemma 3 270M: benchmarks/README.md), so q8_0 is the quantized type to start from."""
    import gguf
    from gguf.quants import quantize

    Q = gguf.GGMLQuantizationType
    arr = data.numpy()
    if arr.ndim < 2:
        return arr.astype(np.float32), Q.F32
    if outtype in ("q8_0", "q4_0") and arr.shape[-1] % 32 == 0:
        qtype = Q.Q8_0 if outtype == "q8_0" else Q.Q4_0
        return quantize(arr, qtype), qtype
    if outtype == "bf16":
        return quantize(arr, Q.BF16), Q.BF16
    return arr.astype(np.float16), Q.F16


# ---------------------------------------------------------------- vocabulary
def source_gguf(weights_dir: Path) -> Path | None:
    """The GGUF a cached model folder was converted from, if it still exists."""
    marker = Path(weights_dir) / "SOURCE"
    if not marker.exists():
        return None
    m = re.match(r"converted from (.+)", marker.read_text(encoding="utf-8").strip())
    path = Path(m.group(1)) if m else None
    return path if path and path.exists() else None


def _kept(values: list, keep: Sequence[int] | None) -> list:
    return values if keep is None else [values[i] for i in keep]


def _copy_vocab_from_gguf(writer: Any, src: Path, vocab_size: int, keep: Sequence[int] | None = None) -> bool:
    """Copy the tokenizer arrays (the `keep` entries only, if given); returns the source's
    add-BOS flag."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    if len(tokens) != vocab_size:
        raise SpecialistError(f"{src}: its vocabulary ({len(tokens)}) does not match the model ({vocab_size})")
    writer.add_tokenizer_model(fields["tokenizer.ggml.model"].contents())
    if "tokenizer.ggml.pre" in fields:
        writer.add_tokenizer_pre(fields["tokenizer.ggml.pre"].contents())
    writer.add_token_list(_kept(tokens, keep))
    if "tokenizer.ggml.scores" in fields:
        writer.add_token_scores(_kept(fields["tokenizer.ggml.scores"].contents(), keep))
    writer.add_token_types(_kept(fields["tokenizer.ggml.token_type"].contents(), keep))
    if "tokenizer.ggml.merges" in fields:
        writer.add_token_merges(fields["tokenizer.ggml.merges"].contents())
    if "tokenizer.ggml.add_space_prefix" in fields:
        writer.add_add_space_prefix(bool(fields["tokenizer.ggml.add_space_prefix"].contents()))
    flag = fields.get("tokenizer.ggml.add_bos_token")
    return bool(flag.contents()) if flag is not None else False


def _pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"  # SmolLM / StarCoder-style: single digits, then GPT-2's byte-level split
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    return "default"


def _write_vocab_from_tokenizer(writer: Any, tokenizer: Any, tok_dir: Path, vocab_size: int,
                                keep: Sequence[int] | None = None) -> None:
    import gguf

    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    byte_level_bpe = model.get("type") == "BPE" and not model.get("byte_fallback")
    if not byte_level_bpe:
        vocab = gguf.LlamaHfVocab(tok_dir)
        tokens, scores, types = [], [], []
        for text, score, toktype in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(int(toktype))
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        _pad_vocab(tokens, types, vocab_size, scores)
        writer.add_token_list(_kept(tokens, keep))
        writer.add_token_scores(_kept(scores, keep))
        writer.add_token_types(_kept(types, keep))
        return
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_decoder)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    types = [_TOKEN_CONTROL if i in special else _TOKEN_USER_DEFINED if i in added else _TOKEN_NORMAL
             for i in range(len(tokens))]
    _pad_vocab(tokens, types, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(data))
    writer.add_token_list(_kept(tokens, keep))
    writer.add_token_types(_kept(types, keep))


def _pad_vocab(tokens: list, types: list, vocab_size: int, scores: list | None = None) -> None:
    # the embedding matrix may be larger than the tokenizer (padded for speed)
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(_TOKEN_UNUSED)
        if scores is not None:
            scores.append(-1000.0)
    del tokens[vocab_size:], types[vocab_size:]


def write_gguf(model: Any, tokenizer: Any, tok_dir: Path, out_file: Path, outtype: str = "f16",
               weights_dir: Path | None = None, name: str = "specialist", kept: Sequence[int] | None = None) -> bool:
    """Write `model` (merged, any dtype) and its tokenizer (saved in tok_dir, with the chat
    template the model was trained on) into out_file; only the `kept` tokens, if given (see the
    module's docstring). Returns whether llama.cpp adds the BOS token itself (the GGUF's
    add_bos_token flag)."""
    import gguf

    if outtype not in OUTTYPES:
        raise SpecialistError(f"unknown --outtype {outtype!r}; use one of {', '.join(OUTTYPES)}", exit_code=2)
    config = model.config
    arch = _arch(config)
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    vocab_size = int(config.vocab_size)
    keep = sorted(set(kept)) if kept is not None else None
    if keep is not None and (not keep or keep[0] < 0 or keep[-1] >= vocab_size):
        raise SpecialistError(f"a kept vocabulary must hold ids of this model's {vocab_size} tokens")
    _write_hparams(writer, config, arch, outtype, len(keep) if keep is not None else vocab_size)

    # SpecialVocab warns about tokenizer.json post-processors it cannot map (Gemma's "<bos> A
    # <bos> B" pair template); the add-BOS/EOS flags are set explicitly below
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)
    src = source_gguf(weights_dir) if weights_dir else None
    if src is not None:
        add_bos = _copy_vocab_from_gguf(writer, src, vocab_size, keep)
        special = gguf.SpecialVocab(tok_dir, load_merges=False, n_vocab=vocab_size)
    else:
        _write_vocab_from_tokenizer(writer, tokenizer, tok_dir, vocab_size, keep)
        special = gguf.SpecialVocab(tok_dir, load_merges=True, n_vocab=vocab_size)
        add_bos = bool(getattr(tokenizer, "add_bos_token", False))
    if keep is not None:  # the special tokens by their place among the kept (one outside is left out)
        place = {t: i for i, t in enumerate(keep)}
        special.special_token_ids = {k: place[v] for k, v in special.special_token_ids.items() if v in place}
    # the template the model was trained with, which a template-less base model got from us
    special.chat_template = tokenizer.chat_template
    special.add_special_token["bos"] = add_bos
    special.add_special_token["eos"] = False
    special.add_to_gguf(writer)

    for tname, data in _tensors(model, arch, keep):
        arr, qtype = _encode(data, outtype)
        # F32/F16 are known from the numpy dtype; packed types (uint8 bytes) need raw_dtype
        writer.add_tensor(tname, arr, raw_dtype=qtype if arr.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return add_bos


def load_merged(model_ref: str) -> LoadedModel:
    """The model with its adapter merged, in float32 so the merge itself adds no rounding, and
    its full output head: llama.cpp and transformers load a head over the whole vocabulary."""
    return load_model(model_ref, dtype=torch.float32, device="cpu", merge_adapter=True, kept_head=False)


def save_gguf(loaded: LoadedModel, out_file: Path, outtype: str = "f16", name: str = "specialist",
              kept: Sequence[int] | None = None) -> bool:
    """write_gguf for a loaded (merged) model. Its tokenizer is saved beside out_file for the
    vocabulary readers and removed again. Returns whether llama.cpp adds the BOS token itself."""
    tok_dir = Path(out_file).parent / ".tokenizer"
    loaded.tokenizer.save_pretrained(tok_dir)
    try:
        return write_gguf(loaded.model, loaded.tokenizer, tok_dir, Path(out_file), outtype,
                          weights_dir=Path(loaded.source.weights), name=name, kept=kept)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
