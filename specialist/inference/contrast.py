"""Context-aware decoding: an answer that follows its retrieved context, not the model's habits.

A small model given passages often answers as it would without them: a plausible sentence in
the house voice that skips or contradicts the figure the passage holds. Context-aware decoding
(Shi et al. 2023, "Trusting Your Evidence: Hallucinate Less with Context-aware Decoding")
scores each next token by how much the context raises it:

    score = log p(y | context, question) + alpha * (log p(y | context, question) - log p(y | question))

where the second distribution comes from the same model on the same conversation with the
context section taken out (models.template.detach_context). alpha = 0 is ordinary decoding.
Only tokens the contextual distribution itself finds plausible (at least PLAUSIBLE times its
best token's probability) stay candidates, so the contrast picks among the model's own
candidates and cannot promote a token it would never write (Li et al. 2023, contrastive
decoding's adaptive plausibility constraint).

It costs one more forward pass per step over the question alone (a short prompt, its own KV
cache, and the output head over the candidates only: ContrastRows), for the rows that carry a
context. `contrast` is the definition over the whole vocabulary, the reference the tests hold
the processor to."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from specialist.inference.batching import left_pad
from specialist.inference.stops import RowDecoder, StepLogits

PLAUSIBLE = 0.1


def contrast(cond: torch.Tensor, plain: torch.Tensor, alpha: float | torch.Tensor,
             plausible: float = PLAUSIBLE) -> torch.Tensor:
    """The contrasted log-scores of one step (rows x vocabulary): `cond` the logits with the
    context, `plain` without it; `alpha` one strength, or one per row (rows x 1). Tokens below
    the plausibility cut get -inf."""
    cond = torch.log_softmax(cond.float(), dim=-1)
    plain = torch.log_softmax(plain.float(), dim=-1)
    mixed = cond + alpha * (cond - plain)
    cut = cond.max(dim=-1, keepdim=True).values + math.log(plausible)
    return mixed.masked_fill(cond < cut, float("-inf"))


class ContrastRows:
    """A transformers logits processor for one `generate` call: each row whose RowDecoder has a
    `contrast` prompt (its question without the context) gets context-aware scores, at the
    row's own `contrast_alpha`. The plain prompts run through `model` alongside generate, fed
    the token each row took, with their own cache. `forward_kwargs(rows)` gives extra model
    arguments for a subset of rows (the batch's adapter names); `step`, the logprobs hook, is
    paused during these passes so it keeps the contextual logits.

    The plain pass projects onto the vocabulary only the tokens that pass the plausibility cut
    (a handful per row, not 262k): the other tokens get -inf whatever the plain model says, and
    the plain distribution's normaliser shifts a row's scores by a constant, which changes
    neither the greedy pick nor sampling. The output head of a small model is most of its
    per-token work, so this keeps the second pass at about the cost of the model's body."""

    def __init__(self, model: torch.nn.Module, rows: Sequence[RowDecoder], pad_id: int,
                 device: torch.device | str, forward_kwargs: Callable[[list[int]], dict] | None = None,
                 step: StepLogits | None = None, plausible: float = PLAUSIBLE) -> None:
        self.model = model
        self.rows = rows
        self.plausible = plausible
        self.pad_id = pad_id
        self.device = device
        self.forward_kwargs = forward_kwargs or (lambda idx: {})
        self.step = step
        self.idx = [i for i, row in enumerate(rows) if row.contrast is not None]
        self.alpha = torch.tensor([[rows[i].contrast_alpha] for i in self.idx], dtype=torch.float32)
        self.mask: torch.Tensor | None = None
        self.cache = None
        self.head = model.get_output_embeddings()
        config = getattr(model, "config", None)
        self.softcap = getattr(config, "final_logit_softcapping", None) or getattr(
            getattr(config, "text_config", None), "final_logit_softcapping", None)

    def _plain_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The plain prompts' last hidden state (what the output head reads), one step on."""
        extra = self.forward_kwargs(self.idx)
        if self.mask is None:  # the first step: the plain prompts themselves
            ids, mask = left_pad([list(self.rows[i].contrast) for i in self.idx], self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        else:  # then the token each row took at the previous step
            ids = input_ids[self.idx, -1:]
            mask = torch.cat([self.mask, torch.ones_like(ids, dtype=self.mask.dtype)], dim=1)
            positions = mask.sum(-1, keepdim=True) - 1
        self.mask = mask
        captured: list[torch.Tensor] = []

        def skip_head(module, args):
            # keep the hidden state, hand the head nothing to project: no 262k-wide logits
            captured.append(args[0][:, -1, :])
            return (args[0][:, :0, :],)

        hook = self.head.register_forward_pre_hook(skip_head)
        if self.step is not None:
            self.step.paused = True
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self.cache,
                             use_cache=True, logits_to_keep=1, **extra)
        finally:
            hook.remove()
            if self.step is not None:
                self.step.paused = False
        self.cache = out.cache
        return captured[0]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.idx:
            return scores
        hidden = self._plain_hidden(input_ids)
        cond = scores[self.idx].float()
        # the cut is relative to each row's best token, so raw logits find the same candidates
        keep = cond >= cond.max(dim=-1, keepdim=True).values + math.log(self.plausible)
        cands = keep.any(dim=0).nonzero().squeeze(-1)
        weight = getattr(self.head, "weight", None)
        if isinstance(weight, torch.Tensor):
            bias = self.head.bias[cands] if getattr(self.head, "bias", None) is not None else None
            plain = torch.nn.functional.linear(hidden, weight[cands], bias).float()
        else:  # int8 path: the head's weights are packed, so it projects whole and the candidates are picked
            plain = self.head(hidden[:, None, :])[:, 0, cands].float()
        if self.softcap:
            plain = torch.tanh(plain / self.softcap) * self.softcap
        # normalised over the candidates instead of the vocabulary: a constant per row, as above
        mixed = torch.full_like(cond, float("-inf"))
        mixed[:, cands] = contrast(cond[:, cands], plain, self.alpha.to(cond.device), self.plausible)
        scores[self.idx] = mixed.to(scores.dtype)
        return scores
