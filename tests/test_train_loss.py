"""The training example format and the fast loss: masking, template identity, EOS trained,
completion-only head == reference loss, padding-free == padded."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.data.example import Example
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_tokenizer
from specialist.models.template import build_messages, encode_prompt, render_completion, render_prompt
from specialist.train.dataset import IGNORE_INDEX, tokenize_example, tokenize_examples
from specialist.train.loss import completion_loss_sum, cross_entropy_sum, predicted_positions, reference_loss
from specialist.train.trainer import make_collator

EXAMPLES = [
    Example(build_messages("Jak długo trwa wysyłka?"), "Paczki wysyłamy w ciągu 24 godzin.", "t", 1),
    Example(build_messages("Czy macie kawę bezkofeinową?", system="Jesteś baristą."),
                 "Tak, z Kolumbii, metodą Swiss Water.", "t", 2),
    Example(build_messages("Ile kosztuje dostawa?"), "14,99 zł, powyżej 150 zł za darmo.", "t", 3),
]


def _load(model_dir):
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return tok, model


def test_prompt_masked_completion_and_eos_trained_even_when_pad_is_eos(tiny_chat_model):
    tok = load_tokenizer(str(tiny_chat_model))
    assert tok.pad_token_id == tok.eos_token_id  # the classic failure case
    ex = EXAMPLES[1]
    f = tokenize_example(tok, ex, max_length=256)
    prompt = encode_prompt(tok, ex.messages)
    n = len(prompt)
    assert f["input_ids"][:n] == prompt
    assert all(label == IGNORE_INDEX for label in f["labels"][:n])  # system + user turns masked
    assert f["labels"][n:] == f["input_ids"][n:]  # every completion token trained
    assert f["labels"][-1] == tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert tok.decode(f["input_ids"][n:]) == render_completion(tok, ex.completion)


def test_training_prompt_string_is_the_generation_prompt_string(tiny_chat_model, tiny_base_model):
    from specialist.models.resolve import load_model

    for model_dir in (tiny_chat_model, tiny_base_model):
        loaded = load_model(str(model_dir), dtype="float32")
        gen = TorchGenerator(loaded)
        for ex in EXAMPLES:
            f = tokenize_example(loaded.tokenizer, ex, 256)
            n_prompt = sum(1 for label in f["labels"] if label == IGNORE_INDEX)
            trained_prompt = loaded.tokenizer.decode(f["input_ids"][:n_prompt])
            assert f["input_ids"][:n_prompt] == gen.prompt_ids(ex.messages)
            assert trained_prompt == render_prompt(loaded.tokenizer, ex.messages)


def test_base_model_default_template_trains_eos(tiny_base_model):
    tok = load_tokenizer(str(tiny_base_model))
    f = tokenize_example(tok, EXAMPLES[0], 256)
    assert f["labels"][-1] == tok.eos_token_id
    n_prompt = f["labels"].count(IGNORE_INDEX)
    assert tok.decode(f["input_ids"][:n_prompt]).endswith("### Assistant:\n")
    assert tok.decode(f["input_ids"][n_prompt:]) == EXAMPLES[0].completion + tok.eos_token


def test_truncation_keeps_length_limit(tiny_chat_model):
    tok = load_tokenizer(str(tiny_chat_model))
    long = Example(build_messages("słowo " * 200), "odpowiedź " * 200, "t", 9)
    f = tokenize_example(tok, long, max_length=64)
    assert len(f["input_ids"]) == len(f["labels"]) == 64
    assert any(label != IGNORE_INDEX for label in f["labels"])


def test_predicted_positions_shift_by_one():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX]])
    assert predicted_positions(labels).tolist() == [[False, True, True, False, False]]


def test_completion_only_head_equals_reference_loss_padded(tiny_chat_model):
    tok, model = _load(tiny_chat_model)
    batch = make_collator(tok, padding_free=False)(tokenize_examples(tok, EXAMPLES, 256))
    labels = batch.pop("labels")
    fast_sum, n, _ = completion_loss_sum(model, dict(batch), labels, head_on_completion_only=True)
    full_sum, n_full, _ = completion_loss_sum(model, dict(batch), labels, head_on_completion_only=False)
    ref = reference_loss(model, dict(batch), labels)
    assert n == n_full == int((labels[:, 1:] != IGNORE_INDEX).sum())
    torch.testing.assert_close(fast_sum / n, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full_sum / n, ref, rtol=1e-5, atol=1e-5)


def test_padding_free_batch_equals_padded_batch_loss_and_grads(tiny_base_model):
    """Flattened sequences with restarting position_ids must not attend across examples:
    the loss (and gradients) equal the padded batch's."""
    tok, model = _load(tiny_base_model)
    tok.pad_token = tok.eos_token
    feats = tokenize_examples(tok, EXAMPLES, 256)
    results = []
    for padding_free in (False, True):
        model.zero_grad()
        batch = make_collator(tok, padding_free)(feats)
        labels = batch.pop("labels")
        if padding_free:
            assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch
        loss_sum, n, _ = completion_loss_sum(model, dict(batch), labels)
        (loss_sum / n).backward()
        results.append((float((loss_sum / n).detach()), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    (padded_loss, padded_grad), (flat_loss, flat_grad) = results
    assert abs(padded_loss - flat_loss) < 1e-5
    torch.testing.assert_close(padded_grad, flat_grad, rtol=1e-4, atol=1e-6)


def test_padding_free_reference_loss_matches_too(tiny_chat_model):
    tok, model = _load(tiny_chat_model)
    batch = make_collator(tok, padding_free=True)(tokenize_examples(tok, EXAMPLES, 256))
    labels = batch.pop("labels")
    fast_sum, n, _ = completion_loss_sum(model, dict(batch), labels)
    torch.testing.assert_close(fast_sum / n, reference_loss(model, dict(batch), labels), rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), vocab=st.integers(2, 300), chunk=st.sampled_from([1, 7, 64, 2**21]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_cross_entropy_sum_equals_torch_cross_entropy_over_fp32_logits(rows, vocab, chunk, dtype, seed):
    """Chunked over rows, on the logits' own dtype: the loss and the gradient that
    F.cross_entropy gives after upcasting everything to fp32 (ignored targets left out)."""
    import torch.nn.functional as F

    from specialist.train import loss as loss_module

    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=g) * 4).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[torch.rand(rows, generator=g) < 0.3] = IGNORE_INDEX
    grads = []
    saved = loss_module.CHUNK_ELEMENTS
    loss_module.CHUNK_ELEMENTS = chunk * vocab
    try:
        for fn in (lambda x: F.cross_entropy(x.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"),
                   lambda x: cross_entropy_sum(x, targets, IGNORE_INDEX)):
            x = logits.clone().requires_grad_(True)
            value = fn(x)
            (value * 1.5).backward()
            assert torch.equal(x.detach(), logits)  # the model's logits are read, never overwritten
            grads.append((value.detach(), x.grad))
    finally:
        loss_module.CHUNK_ELEMENTS = saved
    (want, want_grad), (got, got_grad) = grads
    assert got.dtype == torch.float32 and got_grad.dtype == dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-3)
    torch.testing.assert_close(got_grad, want_grad, **tolerance)
