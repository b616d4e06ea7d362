"""The specialist-sized output head: what it keeps, the loss over the kept vocabulary against
its reference, generation equal to masked full-head decoding, the run folder's vocabulary.json,
and the places that must use the full head (the base model in eval, prompt scoring, exports)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.config import load_train_config
from specialist.errors import SpecialistError
from specialist.evaluate.contenders import adapter_enabled
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model, load_tokenizer
from specialist.models.template import build_messages
from specialist.models.vocab_head import (
    SPELLING_LETTERS,
    KeptHead,
    kept_head,
    kept_token_ids,
    use_kept_head,
    whole_vocabulary,
)
from specialist.run_folder import read_kept_vocabulary, read_summary, write_kept_vocabulary
from specialist.train import train
from specialist.train.dataset import IGNORE_INDEX, tokenize_examples
from specialist.train.loss import completion_loss_sum
from specialist.train.trainer import make_collator
from tests.test_train_loss import EXAMPLES

TEXTS = ["Dostawa kurierem kosztuje 14,99 zł; powyżej 150 zł jest darmowa.",
         "Kawa bezkofeinowa pochodzi z Kolumbii (metoda Swiss Water)."]


@pytest.fixture(scope="module")
def tok(tiny_chat_model):
    return load_tokenizer(str(tiny_chat_model))


@pytest.fixture(scope="module")
def kept(tok) -> set[int]:
    features = tokenize_examples(tok, EXAMPLES, 256)
    return set(kept_token_ids(tok, (f["input_ids"] for f in features), TEXTS))


def test_kept_vocabulary_holds_the_data_digits_specials_and_spelling_pieces(tok, kept):
    features = tokenize_examples(tok, EXAMPLES, 256)
    assert all(i in kept for f in features for i in f["input_ids"])
    assert all(i in kept for t in TEXTS for i in tok(t, add_special_tokens=False)["input_ids"])
    assert set(tok.all_special_ids) <= kept
    for piece in ("0", "7", "2024", ",", "?", "!", " (", "\n"):
        ids = tok(piece, add_special_tokens=False)["input_ids"]
        assert ids and all(i in kept for i in ids), piece
    # the alphabet's letters (diacritics too) as pieces of their own, words spellable
    for letter in "aąęłśżKS":
        ids = tok(letter, add_special_tokens=False)["input_ids"]
        assert all(i in kept for i in ids), letter
    # what the data never uses is left out: another script, long words of other languages
    for other in (" Привет", " responsibility", " Wissenschaft"):
        ids = tok(other, add_special_tokens=False)["input_ids"]
        assert not all(i in kept for i in ids), other
    assert len(kept) < len(tok) / 2


@settings(max_examples=40, deadline=None)
@given(word=st.text(alphabet="abcdeilnorstuwyząęłśż", min_size=1, max_size=12))
def test_any_word_of_the_alphabet_can_be_written_in_kept_pieces(tok, kept, word):
    """Every letter the data uses is a kept piece, so a word never seen (a customer's name)
    can still be written: each letter as it tokenizes alone, at the start and inside a word."""
    for i, letter in enumerate(word):
        text = (" " if i == 0 else "") + letter
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert all(t in kept for t in ids), (text, ids)
    assert SPELLING_LETTERS >= 1


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_loss_over_the_kept_vocabulary_equals_its_reference(tiny_chat_model, tok, kept):
    """The kept head's completion loss = cross-entropy over the full logits' kept columns, for
    the padding-free and the padded collator; gradients reach the adapter."""
    from peft import LoraConfig, get_peft_model

    kept = sorted(kept)
    features = tokenize_examples(tok, EXAMPLES, 256)
    torch.manual_seed(0)
    adapter = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(_model(tiny_chat_model), adapter)
    position = {t: i for i, t in enumerate(kept)}
    for padding_free in (True, False):
        batch = make_collator(tok, padding_free)(features)
        labels = batch.pop("labels")
        with torch.no_grad():
            full = model(**batch, use_cache=False).logits[:, :-1][..., kept]
        targets = labels[:, 1:]
        mapped = targets.clone().apply_(lambda t: position.get(t, -1) if t != IGNORE_INDEX else t)
        reference = F.cross_entropy(full.reshape(-1, len(kept)), mapped.reshape(-1), ignore_index=IGNORE_INDEX,
                                    reduction="sum")
        head = use_kept_head(model, kept, vocab_logits=False)
        try:
            loss_sum, n, out = completion_loss_sum(model, dict(batch), labels)
            assert out.logits.shape[-1] == len(kept)
            assert n == (targets != IGNORE_INDEX).sum()
            torch.testing.assert_close(loss_sum, reference, rtol=1e-5, atol=1e-4)
            loss_sum.backward()
            lora = [p for name, p in model.named_parameters() if "lora_" in name]
            assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
            model.zero_grad()
        finally:
            model.get_base_model().set_output_embeddings(head.head)


def test_the_rest_logit_brings_back_the_full_vocabulary_loss(tiny_chat_model, tok, kept):
    """With the sampled rest logit (training mode), drawing every token outside the set gives
    exactly the full head's cross-entropy; drawing fewer estimates it (within a few percent
    here), its gradient reaches the adapter; in eval mode the logits are the kept ones alone."""
    from peft import LoraConfig, get_peft_model

    kept = sorted(kept)
    features = tokenize_examples(tok, EXAMPLES, 256)
    torch.manual_seed(0)
    model = get_peft_model(_model(tiny_chat_model), LoraConfig(r=4, target_modules="all-linear",
                                                               init_lora_weights=False))
    batch = make_collator(tok, True)(features)
    labels = batch.pop("labels")
    reference, n_ref, _ = completion_loss_sum(model, dict(batch), labels)
    rest = len(tok) - len(kept)
    head = use_kept_head(model, kept, vocab_logits=False, rest_samples=rest)
    try:
        model.train()
        loss_sum, n, out = completion_loss_sum(model, dict(batch), labels)
        assert out.logits.shape[-1] == len(kept) + 1 and n == n_ref
        torch.testing.assert_close(loss_sum, reference, rtol=1e-5, atol=1e-4)
        head.rest_samples = rest // 4
        sampled = completion_loss_sum(model, dict(batch), labels)[0]
        assert abs(sampled.item() / reference.item() - 1) < 0.05
        sampled.backward()
        assert all(p.grad is not None for name, p in model.named_parameters() if "lora_" in name)
        model.eval()
        assert completion_loss_sum(model, dict(batch), labels)[2].logits.shape[-1] == len(kept)
    finally:
        model.get_base_model().set_output_embeddings(head.head)


def test_a_target_outside_the_kept_vocabulary_is_an_error_not_a_silent_skip(tiny_chat_model, tok):
    features = tokenize_examples(tok, EXAMPLES, 256)
    batch = make_collator(tok, True)(features)
    labels = batch.pop("labels")
    model = _model(tiny_chat_model)
    use_kept_head(model, [0, 1, 2], vocab_logits=False)
    with pytest.raises(SpecialistError, match="outside the run's kept vocabulary"):
        completion_loss_sum(model, batch, labels)


def test_generation_equals_full_head_decoding_masked_to_the_kept_set(lively_chat_model):
    """A KeptHead in generation = the full head with every other token at -inf (the definition),
    in a batch; the frozen copy of the rows changes nothing."""
    from transformers import LogitsProcessor

    loaded = load_model(str(lively_chat_model), dtype="float32")
    tok = loaded.tokenizer
    features = tokenize_examples(tok, EXAMPLES, 256)
    kept = kept_token_ids(tok, (f["input_ids"] for f in features[:1]), ["Paczki i kawa, 24 godziny."])
    prompts = [build_messages(p) for p in ("Ile kosztuje dostawa?", "Jak parzyć kawę w kawiarce?", "Cześć!")]
    generator = TorchGenerator(loaded)
    settings = GenerationSettings(max_new_tokens=24)
    full = [a.text for a in generator.generate(prompts, settings)]

    class KeepOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            masked = torch.full_like(scores, float("-inf"))
            masked[:, kept] = scores[:, kept]
            return masked

    class MaskedGenerator(TorchGenerator):
        def run_batch(self, prompts_, rows, settings_, adapters=None):
            original = self.model.generate

            def generate(**kw):
                kw.setdefault("logits_processor", []).insert(0, KeepOnly())
                return original(**kw)

            self.model.generate = generate
            try:
                return super().run_batch(prompts_, rows, settings_, adapters)
            finally:
                del self.model.generate

    reference = list(MaskedGenerator(loaded).generate(prompts, settings))
    use_kept_head(loaded.model, kept, vocab_logits=True, frozen=True)
    answers = generator.generate(prompts, settings)
    assert [a.text for a in answers] == [a.text for a in reference]
    assert [a.text for a in answers] != full  # the lively model does reach for other tokens
    # prompt tokens are scored over the whole vocabulary: finite even where the head would say -inf
    scored = generator.prompt_logprobs([generator.prompt_ids(prompts[0])])[0]
    assert all(lp is None or lp.logprob > float("-inf") for lp in scored)
    with whole_vocabulary(loaded.model):
        assert [a.text for a in generator.generate(prompts, settings)] == full
    assert kept_head(loaded.model).active


def _train(model, data, out, **kw):
    settings = dict(data=data, model=str(model), out=out, batch_size=4, max_steps=4, logging_steps=2,
                    save_steps=1000, warmup_ratio=0.0, lr_scheduler="constant")
    settings.update(kw)
    return train(load_train_config(overrides=settings), show_progress=False)


@pytest.fixture
def data_file(tmp_path) -> Path:
    rows = [{"prompt": "Ile kosztuje dostawa?", "completion": "Dostawa kosztuje 14,99 zł."},
            {"prompt": "Skąd jest kawa bezkofeinowa?", "completion": "Z Kolumbii, metodą Swiss Water."}] * 2
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_run_trains_and_generates_with_its_kept_head_and_eval_s_base_uses_the_whole(tiny_chat_model, data_file,
                                                                                     tmp_path):
    run = _train(tiny_chat_model, data_file, tmp_path / "run")
    kept, size = read_kept_vocabulary(run)
    summary = read_summary(run)
    assert summary.output_head == {"tokens": len(kept), "vocabulary": size, "training": "full"}
    tok = load_tokenizer(str(run))
    assert size == len(tok) and len(kept) < size
    assert all(i in set(kept) for i in tok("Dostawa kosztuje 14,99 zł.", add_special_tokens=False)["input_ids"])

    loaded = load_model(str(run), dtype="float32")
    head = kept_head(loaded.model)
    assert isinstance(head, KeptHead) and head.vocab_logits and head.kept.tolist() == kept
    with adapter_enabled(loaded.model, False):
        assert not head.active  # the base model's answers: its whole vocabulary
    assert head.active
    assert kept_head(load_model(str(run), dtype="float32", kept_head=False).model) is None  # exports

    full = _train(tiny_chat_model, data_file, tmp_path / "full", output_head="full")
    assert read_kept_vocabulary(full) is None and read_summary(full).output_head is None
    assert kept_head(load_model(str(full), dtype="float32").model) is None


def _losses(run: Path) -> list[float]:
    return [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]


def test_losses_with_the_kept_head_track_the_full_head(tiny_chat_model, data_file, tmp_path):
    """Same data, same seed: training over the kept vocabulary (output_head kept) with its
    sampled rest logit starts where the full head does (the rest's mass is counted: this tiny
    vocabulary's rest is drawn whole) and learns as it does; the default (kept head at
    generation only) trains exactly as the full head."""
    kept = _losses(_train(tiny_chat_model, data_file, tmp_path / "k", max_steps=8, output_head="kept"))
    full = _losses(_train(tiny_chat_model, data_file, tmp_path / "f", max_steps=8, output_head="full"))
    default = _train(tiny_chat_model, data_file, tmp_path / "d", max_steps=8)
    assert kept[0] == pytest.approx(full[0], rel=0.01)
    assert kept[-1] < kept[0] and full[-1] < full[0]
    assert kept[-1] == pytest.approx(full[-1], rel=0.05)
    assert _losses(default) == pytest.approx(full, abs=1e-6)
    assert read_summary(default).output_head["training"] == "full"


def test_a_damaged_vocabulary_json_is_a_located_error(tmp_path):
    write_kept_vocabulary(tmp_path, [3, 1, 2], 10)
    assert read_kept_vocabulary(tmp_path) == ([1, 2, 3], 10)
    path = tmp_path / "vocabulary.json"
    for text, message in (('{"vocabulary": 10, "kept": [1, 12]}', "kept: expected"),
                          ('{"kept": [1]}', "vocabulary: expected"),
                          ('{"vocabulary": 10, "kept": [1,', "vocabulary.json:1:")):
        path.write_text(text)
        with pytest.raises(SpecialistError, match=message) as err:
            read_kept_vocabulary(tmp_path)
        assert str(path) in str(err.value)


def test_full_fine_tuning_keeps_the_full_head_and_fsdp_trains_over_it(tok, tmp_path):
    """Full fine-tuning trains the tied embedding the head shares: no kept head at all. FSDP
    shards the rows the kept head selects from: it trains over the whole vocabulary."""
    from specialist.train.run import kept_vocabulary, trains_over_kept

    features = tokenize_examples(tok, EXAMPLES, 256)
    base = {"data": tmp_path / "d.jsonl", "model": "m", "out": tmp_path / "o"}

    def config(**extra):
        return load_train_config(overrides={**base, **extra})

    assert kept_vocabulary(config(), tok, features, None, None)
    for extra in ({"method": "full"}, {"output_head": "full"}):
        assert kept_vocabulary(config(**extra), tok, features, None, None) is None
    assert trains_over_kept(config(output_head="kept"))
    assert not trains_over_kept(config()) and not trains_over_kept(config(output_head="kept", fsdp="full_shard"))


def test_token_surfaces_are_what_batch_decode_writes(chat_tokenizer_dir, base_tokenizer_dir):
    """The Rust backend's decoding of every token id alone equals the tokenizer's own
    batch_decode, for a tokenizer that takes that path and for one that cleans up spaces."""
    from transformers import AutoTokenizer

    from specialist.models.vocab_head import token_surfaces

    for folder in (chat_tokenizer_dir, base_tokenizer_dir):
        tok = AutoTokenizer.from_pretrained(folder)
        size = len(tok)
        assert token_surfaces(tok, size) == tok.batch_decode([[i] for i in range(size)])
        tok.clean_up_tokenization_spaces = True
        assert token_surfaces(tok, size) == tok.batch_decode([[i] for i in range(size)])
