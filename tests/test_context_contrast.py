"""Context-aware decoding (inference/contrast.py): the prompt without its context, the scores,
and the batched, cached decoding against a reference that recomputes every step in full."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.inference.contrast import PLAUSIBLE, contrast
from specialist.models.template import attach_context, build_messages, detach_context


@dataclass
class _Passage:
    title: str
    text: str


_line = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).filter(lambda t: "\n" not in t)


@settings(max_examples=200, deadline=None)
@given(prompt=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80),
       system=st.one_of(st.none(), _line),
       passages=st.lists(st.builds(_Passage, _line, st.text(max_size=80)), max_size=4),
       history=st.lists(st.tuples(_line, _line), max_size=2))
def test_detach_context_gives_back_the_conversation_without_context(prompt, system, passages, history):
    turns = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    plain = build_messages(prompt, system, turns)
    with_context = build_messages(prompt, system, turns, passages)
    assert with_context == attach_context(plain, passages)
    assert detach_context(with_context) == plain


def test_detach_context_is_none_without_a_context():
    assert detach_context(build_messages("Ile kosztuje wysyłka?", "system")) is None
    assert detach_context([{"role": "system", "content": "x"}]) is None


def test_contrast_scores_favour_what_the_context_raises_among_plausible_tokens():
    cond = torch.tensor([[2.0, 1.9, 0.0, -9.0]])
    plain = torch.tensor([[3.0, 0.0, 0.0, -20.0]])  # the model alone prefers token 0
    assert contrast(cond, plain, 0.0).argmax().item() == 0  # alpha 0: ordinary decoding
    mixed = contrast(cond, plain, 0.5)
    assert mixed.argmax().item() == 1  # the context raised token 1 the most among the plausible
    # token 3 gained the most from the context, but the contextual model finds it implausible
    assert mixed[0, 3].item() == float("-inf")
    lp = torch.log_softmax(cond, -1)
    assert all((mixed[0, i] > float("-inf")) == (lp[0, i] >= lp.max() + math.log(PLAUSIBLE)) for i in range(4))


def test_contrast_with_an_uninformative_context_is_ordinary_decoding():
    cond = torch.randn(3, 50)
    out = contrast(cond, cond.clone(), 2.0)
    kept = out > float("-inf")
    assert torch.allclose(out[kept], torch.log_softmax(cond, -1)[kept], atol=1e-5)
    assert torch.equal(out.argmax(-1), cond.argmax(-1))


CONTEXTS = [
    [_Passage("Dostawa", "Dostawa kurierem kosztuje 14,99 zł, od 150 zł jest darmowa.")],
    [_Passage("Zwroty", "Nieotwartą kawę można zwrócić w ciągu 14 dni."),
     _Passage("Godziny", "Palarnia jest otwarta od poniedziałku do piątku, 8-18, w sobotę 9-14.")],
]


def _conversations() -> list[list[dict]]:
    return [build_messages("Ile kosztuje wysyłka?", "Jesteś baristą.", context=CONTEXTS[0]),
            build_messages("Do kiedy mogę oddać kawę? A w sobotę?", None, context=CONTEXTS[1]),
            build_messages("Cześć, co polecasz?", "Jesteś baristą.")]  # no context: ordinary decoding


def _reference(generator, messages, alpha: float, max_new: int) -> list[int]:
    """Greedy context-aware decoding of one conversation, every step recomputed from scratch."""
    model = generator.model
    ids = generator.prompt_ids(messages)
    plain_msgs = detach_context(messages)
    plain = generator.prompt_ids(plain_msgs) if plain_msgs is not None else None
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_new):
            cond = model(torch.tensor([ids + out])).logits[:, -1].float()
            if plain is not None:
                cond = contrast(cond, model(torch.tensor([plain + out])).logits[:, -1].float(), alpha)
            token = int(cond.argmax(-1))
            out.append(token)
            if token in generator.eos_ids:
                break
    return out


@pytest.fixture
def lively_generator(lively_chat_model):
    from specialist.inference.precision import load_for_generation
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.device import generation_path

    return TorchGenerator(load_for_generation(str(lively_chat_model), generation_path(frozenset(), requested="fp32")))


def test_batched_cached_contrast_equals_the_reference(lively_generator):
    from specialist.inference.sampling import GenerationSettings

    g = lively_generator
    convs = _conversations()
    alphas = [1.0, 0.5, 1.0]  # each row its own: a server batch mixes specialists and requests
    rows = []
    for conv, alpha in zip(convs, alphas):
        prompt = g.prompt_ids(conv)
        own = GenerationSettings(max_new_tokens=10, context_contrast=alpha)
        rows.append(g.row_decoder(len(prompt), own, prompt=prompt, contrast=g.contrast_ids(conv, own)))
    assert [r.contrast is not None for r in rows] == [True, True, False]
    # the batch's shared settings (the first job's, in the server) do not switch a row's contrast
    g.run_batch([g.prompt_ids(c) for c in convs], rows, GenerationSettings(max_new_tokens=10))
    for conv, row, alpha in zip(convs, rows, alphas):
        expected = _reference(g, conv, alpha, 10)
        taken = [t for t in expected if t not in g.eos_ids]
        assert row.tokens == taken, g.tokenizer.decode(row.tokens)
    # and it changes what the model says: otherwise the test proves nothing
    settings = GenerationSettings(max_new_tokens=10, context_contrast=1.0)
    plain = g.generate(convs[:2], GenerationSettings(max_new_tokens=10))
    contrasted = g.generate(convs[:2], settings)
    assert [a.text for a in plain] != [a.text for a in contrasted]
    # streaming (chat, serve) takes the same path
    assert "".join(g.stream(convs[1], settings)) == contrasted[1].text


def test_logprobs_with_contrast_score_the_contextual_model(lively_generator):
    """The logprobs hook must keep the contextual logits, not the plain prompt's pass."""
    from specialist.inference.sampling import GenerationSettings

    g = lively_generator
    conv = _conversations()[0]
    prompt = g.prompt_ids(conv)
    firsts = []
    for alpha in (0.0, 1.0):
        settings = GenerationSettings(max_new_tokens=1, context_contrast=alpha)
        row = g.row_decoder(len(prompt), settings, prompt=prompt, logprobs=5, contrast=g.contrast_ids(conv, settings))
        g.run_batch([prompt], [row], settings)
        firsts.append([(tok, round(lp, 4)) for tok, lp in row.scores[0].top])
    assert firsts[0] == firsts[1]


def test_knowledge_generation_settings_carry_the_runs_contrast(tmp_path):
    from specialist.inference.sampling import GenerationSettings
    from specialist.knowledge.passages import load_knowledge
    from specialist.knowledge.runtime import KnowledgeContext
    from specialist.knowledge.snapshot import RetrievalSettings

    (tmp_path / "kb.md").write_text("# Dostawa\n\nDostawa kosztuje 14,99 zł.\n", encoding="utf-8")
    kb = load_knowledge(tmp_path / "kb.md")
    from specialist.config import TrainConfig
    from specialist.knowledge.snapshot import CONTEXT_CONTRAST

    # a run records its training setting; runs trained before it get the default
    trained = TrainConfig.model_fields["knowledge_context_contrast"].default
    assert RetrievalSettings().context_contrast == CONTEXT_CONTRAST == trained
    ctx = KnowledgeContext(kb, RetrievalSettings(context_contrast=0.5))
    assert ctx.generation(GenerationSettings()).context_contrast == 0.5
    assert ctx.describe()["context_contrast"] == 0.5


def test_a_bad_contrast_in_a_runs_snapshot_is_a_located_error(tmp_path):
    import json

    from specialist.errors import SpecialistError
    from specialist.knowledge.passages import load_knowledge
    from specialist.knowledge.snapshot import RetrievalSettings, load_snapshot, save_snapshot, snapshot_dir

    (tmp_path / "kb.md").write_text("# Dostawa\n\nDostawa kosztuje 14,99 zł.\n", encoding="utf-8")
    run = tmp_path / "run"
    save_snapshot(load_knowledge(tmp_path / "kb.md"), run, RetrievalSettings(context_contrast=1.5))
    assert load_snapshot(run)[1].context_contrast == 1.5
    path = snapshot_dir(run) / "knowledge.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    for bad in ("strong", -1, True):
        doc["retrieval"]["context_contrast"] = bad
        path.write_text(json.dumps(doc), encoding="utf-8")
        with pytest.raises(SpecialistError, match=r"knowledge\.json: retrieval\.context_contrast"):
            load_snapshot(run)


def test_contrast_with_a_kept_head_equals_the_reference(lively_generator):
    """A specialist-sized head (models.vocab_head) under context-aware decoding: the contrast
    picks among kept tokens exactly as the step-by-step reference does."""
    from specialist.inference.sampling import GenerationSettings
    from specialist.models.vocab_head import use_kept_head

    g = lively_generator
    convs = _conversations()[:2]
    kept = sorted({*range(200), *(t for c in convs for t in g.prompt_ids(c)), *g.eos_ids})
    use_kept_head(g.model, kept, vocab_logits=True, frozen=True)
    settings = GenerationSettings(max_new_tokens=8, context_contrast=1.0)
    for conv, answer in zip(convs, g.generate(convs, settings)):
        expected = [t for t in _reference(g, conv, 1.0, 8) if t not in g.eos_ids]
        assert answer.text == g.tokenizer.decode(expected)
        assert all(t in set(kept) for t in expected)


def test_contrast_runs_on_the_int8_path(lively_chat_model):
    """int8 weights pack the output head (no row slicing): the contrast projects it whole."""
    from specialist.inference.precision import int8_available, load_for_generation
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.device import generation_path

    if not int8_available():
        pytest.skip("no quantized engine for int8 Linear here")
    g = TorchGenerator(load_for_generation(str(lively_chat_model), generation_path(frozenset(), requested="int8")))
    convs = _conversations()[:2]
    plain = g.generate(convs, GenerationSettings(max_new_tokens=10))
    contrasted = g.generate(convs, GenerationSettings(max_new_tokens=10, context_contrast=1.0))
    assert all(a.text for a in contrasted)
    assert [a.text for a in plain] != [a.text for a in contrasted]
