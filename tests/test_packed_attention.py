"""Attention over a padding-free batch, one example at a time (models/packed_attention.py),
against transformers' own sdpa with its block-diagonal mask: the same attention outputs, the
same loss and the same LoRA gradients, and the choice that training makes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.models.packed_attention import packed_mask, packed_sdpa_forward, register, segments


def _block_causal_mask(lengths: list[int], window: int | None) -> torch.Tensor:
    """The reference: causal within each example, nothing across examples, at most `window` back."""
    example = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    position = torch.cat([torch.arange(n) for n in lengths])
    mask = (example[:, None] == example[None, :]) & (position[None, :] <= position[:, None])
    if window is not None:
        mask &= position[:, None] - position[None, :] < window
    return mask


class _Layer(torch.nn.Module):
    pass


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 24), min_size=1, max_size=6), kv_heads=st.sampled_from([1, 2, 4]),
       window=st.sampled_from([None, 3, 8]), seed=st.integers(0, 2**16))
def test_each_example_attends_to_itself_as_the_masked_square_says(lengths, kv_heads, window, seed):
    g = torch.Generator().manual_seed(seed)
    total, heads, dim = sum(lengths), 4, 8
    q = torch.randn(1, heads, total, dim, generator=g)
    k, v = (torch.randn(1, kv_heads, total, dim, generator=g) for _ in range(2))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    out, _ = packed_sdpa_forward(_Layer(), q, k, v, None, scaling=0.3, sliding_window=window, position_ids=positions)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=_block_causal_mask(lengths, window), scale=0.3,
                                               enable_gqa=kv_heads != heads).transpose(1, 2)
    assert out.shape == (1, total, heads, dim)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


@given(st.lists(st.integers(1, 30), min_size=1, max_size=8))
def test_segments_are_the_examples_of_the_row(lengths):
    positions = torch.cat([torch.arange(n) for n in lengths])
    bounds = segments(positions, len(positions))
    assert [end - start for start, end in bounds] == lengths
    assert segments(None, 7) == [(0, 7)]


def test_the_mask_is_left_out_only_for_an_unpadded_first_pass():
    assert packed_mask(1, 10, 10) is None
    padded = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    mask = packed_mask(1, 4, 4, attention_mask=padded)
    assert mask is not None and mask.shape == (1, 1, 4, 4) and not mask[0, 0, :, 3].any()
    # decoding over a cache keeps transformers' own answer
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    decoding = dict(batch_size=2, q_length=1, kv_length=5, q_offset=4, mask_function=causal_mask_function,
                    attention_mask=torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool))
    assert torch.equal(packed_mask(**decoding), sdpa_mask(**decoding))


def test_loss_and_lora_gradients_equal_transformers_masked_sdpa(tiny_base_model):
    """Tiny Gemma 3 (sliding window 64, GQA), three examples flattened into one row, one of them
    longer than the window: the same loss and the same adapter gradients as transformers'
    sdpa, which builds the block-diagonal mask."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lengths = [70, 25, 40]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (1, sum(lengths)), generator=g)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    labels = ids.clone()
    labels[0, [0, 70, 95]] = -100  # nothing predicts across examples
    results = {}
    for implementation in ("sdpa", register()):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32,
                                                     attn_implementation=implementation)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(model, lora)
        loss = model(input_ids=ids, position_ids=positions, labels=labels, use_cache=False).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results[implementation] = (loss.detach(), grads)
    (loss_ref, grads_ref), (loss, grads) = results["sdpa"], results["sdpa_packed"]
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=1e-6)
    assert grads.keys() == grads_ref.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_generation_over_a_cache_is_transformers_own(tiny_base_model):
    """The registered implementation also serves a model that generates (a padded batch, a cache):
    the same greedy tokens as sdpa."""
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    out = {}
    for implementation in ("sdpa", register()):
        model = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32,
                                                     attn_implementation=implementation)
        out[implementation] = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(out["sdpa"], out["sdpa_packed"])
