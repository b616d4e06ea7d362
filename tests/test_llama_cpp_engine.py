"""--engine llama.cpp: the LlamaCppGenerator's bookkeeping (parallel sequences, positions,
chunked prompt reading, which logits belong to which row) against the PyTorch engine, with
a stand-in for llama.cpp's C API that runs the same tiny model in PyTorch; then engine
selection and the cached GGUF. The real llama.cpp runs in the slow tests at the end."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from specialist.errors import SpecialistError
from specialist.inference import llama_cpp_engine as lc
from specialist.inference.engines import make_generator
from specialist.inference.gguf_cache import engine_gguf
from specialist.inference.sampling import GenerationSettings, sample
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.models.template import build_messages

PROMPTS = ["Dzień dobry, czy macie dziś sernik?", "Ile kosztuje duże latte z mlekiem owsianym?", "Hej!"]


class FakeLlamaCpp:
    """The slice of llama.cpp's C API the engine calls, computing logits with a PyTorch model:
    each sequence keeps its own tokens, every token must arrive at the next position of its
    sequence, and logits exist only for batch entries that asked for them."""

    def __init__(self, model, system_info: str = "AVX2 = 1 | AVX512 = 1 |", n_ctx_train: int = 2048,
                 kept: list[int] | None = None):
        self.model = model
        self.kept = kept  # a kept-vocabulary GGUF: logits over these rows; the batch brings embeddings
        self.system_info = system_info
        self.n_ctx_train = n_ctx_train
        self.seqs: dict[int, list[int]] = {}
        self.out: dict[int, ctypes.Array] = {}
        self.decode_sizes: list[int] = []
        self.calls: list[list[tuple[int, int]]] = []  # (sequence, position) of each token of each llama_decode
        self.n_swa = 0  # no sliding-window layer
        self.removed: list[tuple[int, int]] = []  # (sequence, from position) of each llama_memory_seq_rm
        self.copies: list[tuple[int, int]] = []  # (from, to) of each llama_memory_seq_cp
        self.model_params = None
        self.fail_decode = False
        self.fail_context = False
        self.models_freed = 0
        self.llama_log_callback = lambda f: f

    # setup
    def llama_log_set(self, cb, data): pass
    def llama_backend_init(self): pass
    def llama_print_system_info(self): return self.system_info.encode()
    def llama_model_default_params(self):
        class Params:  # a ctypes-like struct: the engine checks the field exists before setting it
            _fields_ = (("use_extra_bufts", bool),)
            use_extra_bufts = True
        return Params()
    def llama_context_default_params(self): return SimpleNamespace()

    def llama_model_load_from_file(self, path, params):
        self.model_params = params
        return "model" if Path(path.decode()).exists() else None

    def llama_model_n_ctx_train(self, model): return self.n_ctx_train
    def llama_model_n_swa(self, model): return self.n_swa
    def llama_model_is_recurrent(self, model): return False
    def llama_model_is_hybrid(self, model): return False

    def llama_init_from_model(self, model, params):
        self.ctx_params = params
        return None if self.fail_context else "ctx"

    def llama_n_ctx_seq(self, ctx):
        # llama.cpp splits n_ctx between the sequences only with separate (not unified) caches
        return self.ctx_params.n_ctx // (1 if self.ctx_params.kv_unified else self.ctx_params.n_seq_max)
    def llama_get_memory(self, ctx): return "mem"
    def llama_model_get_vocab(self, model): return "vocab"
    def llama_vocab_n_tokens(self, vocab): return len(self.kept) if self.kept else self.model.config.vocab_size

    def llama_batch_init(self, n_tokens, embd, n_seq_max):
        self.batch_capacity = n_tokens
        self.embd_dim = embd
        self.embd_buffer = (ctypes.c_float * (n_tokens * embd))() if embd else None
        return SimpleNamespace(token=None if embd else [0] * n_tokens, pos=[0] * n_tokens, n_seq_id=[0] * n_tokens,
                               seq_id=[[0] for _ in range(n_tokens)], logits=[False] * n_tokens, n_tokens=0,
                               embd=ctypes.cast(self.embd_buffer, ctypes.POINTER(ctypes.c_float)) if embd else None)

    def llama_batch_free(self, b): pass
    def llama_free(self, ctx): pass
    def llama_model_free(self, model): self.models_freed += 1

    # decoding
    def llama_memory_clear(self, mem, data): self.seqs.clear()

    def llama_memory_seq_rm(self, mem, seq, p0, p1):
        assert p1 == -1 and (p0 == -1 or 0 <= p0 <= len(self.seqs.get(seq, [])))
        if p0 == -1:  # the whole sequence
            self.seqs.pop(seq, None)
            return True
        self.removed.append((seq, p0))
        del self.seqs[seq][p0:]
        return True

    def llama_memory_seq_cp(self, mem, src, dst, p0, p1):
        # between separate caches (kv_unified off) llama.cpp copies only whole sequences
        assert p0 in (-1, 0) and p1 == -1 and src != dst
        self.copies.append((src, dst))
        self.seqs[dst] = list(self.seqs.get(src, []))

    def llama_decode(self, ctx, b):
        assert b.n_tokens <= self.batch_capacity
        self.decode_sizes.append(b.n_tokens)
        self.calls.append([(b.seq_id[i][0], b.pos[i]) for i in range(b.n_tokens)])
        self.out.clear()
        if self.fail_decode:
            return -3
        for i in range(b.n_tokens):
            assert b.n_seq_id[i] == 1 and 0 <= b.seq_id[i][0] < self.ctx_params.n_seq_max
            seq = self.seqs.setdefault(b.seq_id[i][0], [])
            assert b.pos[i] == len(seq), f"sequence {b.seq_id[i][0]}: token at {b.pos[i]}, expected {len(seq)}"
            assert b.pos[i] < self.llama_n_ctx_seq("ctx"), "past the sequence's context"
            d = self.embd_dim
            seq.append(b.token[i] if not d else torch.tensor(self.embd_buffer[i * d:(i + 1) * d]))
            if b.logits[i]:
                with torch.no_grad():
                    given = {"inputs_embeds": torch.stack(seq)[None]} if d else {"input_ids": torch.tensor([seq])}
                    logits = self.model(**given).logits[0, -1].float()
                    logits = (logits[self.kept] if self.kept else logits).numpy()
                self.out[i] = (ctypes.c_float * len(logits))(*logits)
        return 0

    def llama_get_logits_ith(self, ctx, i):
        arr = self.out.get(i)
        return ctypes.cast(arr, ctypes.POINTER(ctypes.c_float)) if arr is not None else None


@pytest.fixture(scope="module")
def torch_generator(lively_model) -> TorchGenerator:
    return TorchGenerator(load_model(str(lively_model), dtype="float32"))


@pytest.fixture(scope="module")
def lively_model(chat_tokenizer_dir, tmp_path_factory) -> Path:
    from tests.helpers import build_lively_model

    return build_lively_model(tmp_path_factory.mktemp("lively-engine"), chat_tokenizer_dir)


def fake_engine(monkeypatch, torch_generator, tmp_path, **kwargs):
    fake = FakeLlamaCpp(torch_generator.model, **{k: kwargs.pop(k) for k in ("system_info",) if k in kwargs},
                        kept=kwargs.get("kept") if kwargs.get("inputs") is not None else None)
    monkeypatch.setattr(lc, "require_llama_cpp", lambda: fake)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    return fake, lc.LlamaCppGenerator(gguf, torch_generator.tokenizer, **kwargs)


def test_batched_sequences_answer_like_pytorch(monkeypatch, torch_generator, tmp_path):
    # a prefill chunk of 7 tokens splits prompts and mixes two prompts in one llama_decode
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=4, prefill_chunk=7)
    settings = GenerationSettings(max_new_tokens=12)
    convs = [build_messages(p) for p in PROMPTS]
    expected = torch_generator.generate(convs, settings, batch_size=1)
    got = engine.generate(convs, settings)
    assert [a.text for a in got] == [a.text for a in expected]
    assert [a.completion_tokens for a in got] == [a.completion_tokens for a in expected]
    assert len({a.text for a in got}) == 3 and all(a.text for a in got)
    assert max(fake.decode_sizes) == 7  # prompts were read in chunks, several rows at once
    steps = fake.decode_sizes[-3:]
    assert all(1 <= n <= 3 for n in steps)  # then one token per unfinished row per step


@dataclass
class Passage:
    title: str
    text: str


SHIPPING = [Passage("Dostawa", "Dostawa kurierem kosztuje 14,99 zł, od 150 zł darmowa.")]
RETURNS = [Passage("Zwroty", "Nieotwartą kawę można zwrócić w ciągu 14 dni.")]


def test_context_aware_decoding_and_a_kept_head_answer_like_pytorch(monkeypatch, torch_generator, lively_model,
                                                                    tmp_path):
    """A row with retrieved passages decodes its plain prompt as a second sequence beside it and
    picks by contrast.contrast; a run's kept head writes only kept tokens: the same greedy
    answers as the torch engine (whose context-aware decoding test_context_contrast holds to a
    step-by-step reference)."""
    from specialist.models.vocab_head import use_kept_head

    convs = [build_messages("Ile kosztuje wysyłka?", "Jesteś baristą.", context=SHIPPING),
             build_messages("Cześć, co polecasz?", "Jesteś baristą."),  # no context: ordinary decoding
             build_messages("Do kiedy mogę oddać kawę?", None, context=RETURNS)]
    settings = GenerationSettings(max_new_tokens=10, context_contrast=1.0)
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=3, prefill_chunk=9)
    expected = torch_generator.generate(convs, settings, batch_size=1)
    got = engine.generate(convs, settings)
    assert [a.text for a in got] == [a.text for a in expected]
    assert sorted(fake.seqs) == [0, 1, 2, 3, 5]  # rows 0 and 2 ran their plain prompts as 3 + i
    plain = torch_generator.generate(convs, GenerationSettings(max_new_tokens=10), batch_size=1)
    assert [a.text for a in got] != [a.text for a in plain]  # the contrast changed what it says
    # one stream at a time (chat), the plain prompt is fed lazily, when a step has several plausible
    # tokens: the same answers, and with a cut this tight (only the best token passes) never
    assert [engine.generate([c], settings)[0].text for c in convs] == [a.text for a in got]
    monkeypatch.setattr(lc, "PLAUSIBLE", 0.999)
    lazy = engine.generate([convs[2]], settings)[0]
    assert lazy.text == plain[2].text and 3 not in fake.seqs  # its plain prompt (sequence 3) was never read
    monkeypatch.undo()

    kept_model = load_model(str(lively_model), dtype="float32")
    kept = sorted({*range(150), *(t for c in convs for t in torch_generator.prompt_ids(c)),
                   *torch_generator.eos_ids})
    use_kept_head(kept_model.model, kept, vocab_logits=True, frozen=True)
    reference = TorchGenerator(kept_model).generate(convs, settings, batch_size=1)
    kept_fake, kept_engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=3, kept=kept)
    got = kept_engine.generate(convs, settings)
    assert [a.text for a in got] == [a.text for a in reference]
    assert [a.text for a in got] != [a.text for a in expected]  # the full head would write other tokens
    written = {t for i, c in enumerate(convs) for t in kept_fake.seqs[i][len(torch_generator.prompt_ids(c)):]}
    assert written and written <= set(kept)


def test_a_kept_vocabulary_gguf_reads_embeddings_and_answers_like_pytorch(monkeypatch, torch_generator, lively_model,
                                                                         tmp_path):
    """A run's GGUF of its kept tokens only (gguf_cache.py): the prompt goes in as input
    embeddings, the logits come back over the kept rows and are put at their token ids, so the
    answers, context-aware or not, equal the torch engine's with the kept head."""
    from specialist.inference.gguf_cache import input_embeddings
    from specialist.models.vocab_head import use_kept_head

    convs = [build_messages("Ile kosztuje wysyłka?", "Jesteś baristą.", context=SHIPPING),
             build_messages("Cześć, co polecasz?", "Jesteś baristą.")]
    kept = sorted({*range(150), *(t for c in convs for t in torch_generator.prompt_ids(c)), *torch_generator.eos_ids})
    inputs = input_embeddings(torch_generator.model)
    assert inputs.shape == (torch_generator.model.config.vocab_size, torch_generator.model.config.hidden_size)
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2, prefill_chunk=9, kept=kept,
                               inputs=inputs)
    assert fake.embd_dim == inputs.shape[1] and engine.n_vocab == inputs.shape[0]
    assert not engine.scores_prompts  # the other tokens have no logits here: the server refuses echo scoring
    kept_model = load_model(str(lively_model), dtype="float32")
    use_kept_head(kept_model.model, kept, vocab_logits=True, frozen=True)
    reference = TorchGenerator(kept_model)
    for alpha in (0.0, 1.0):
        settings = GenerationSettings(max_new_tokens=10, context_contrast=alpha)
        expected = reference.generate(convs, settings, batch_size=1)
        assert [a.text for a in engine.generate(convs, settings)] == [a.text for a in expected]
        assert all(a.text for a in expected)
    few = GenerationSettings(max_new_tokens=2)
    with pytest.raises(SpecialistError, match="outside the model's"):  # a token id past the embeddings: one line
        engine.run_batch([[1, inputs.shape[0]]], [engine.row_decoder(2, few)], few)
    with pytest.raises(SpecialistError, match="kept ids"):  # a GGUF of another kept set
        lc.LlamaCppGenerator(engine.gguf, torch_generator.tokenizer, kept=kept[:-1], inputs=inputs)


def test_a_lone_stream_checks_drafted_tokens_and_answers_the_same(monkeypatch, torch_generator, tmp_path):
    """Prompt lookup decoding (chat, one stream): the tokens that followed the answer's last few
    tokens earlier ride along in the step's call; those the model would have picked are kept,
    the rest leave the cache. The answers equal the torch engine's, greedy, and sampled with a
    seed they equal the engine's own without drafts; fewer calls than tokens."""
    # this tiny model falls into loops ("tip tip tip …"), which the lookup finds
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2)
    convs = [build_messages(p) for p in PROMPTS]
    greedy = GenerationSettings(max_new_tokens=40)
    expected = torch_generator.generate(convs, greedy, batch_size=1)
    fake.calls.clear()
    got = [engine.generate([c], greedy)[0] for c in convs]
    assert [a.text for a in got] == [a.text for a in expected] and all(a.completion_tokens == 40 for a in got)
    steps = [c for c in fake.calls if len(c) < 12]  # after the prompts
    assert len(fake.calls) < 3 * 40 and max(len(c) for c in steps) > 2  # several tokens per call
    assert fake.removed  # some drafts were not what the model picks
    hot = GenerationSettings(max_new_tokens=40, temperature=0.8, seed=3)
    drafted = [engine.generate([c], hot)[0].text for c in convs]
    monkeypatch.setattr(lc, "DRAFT_TOKENS", 0)
    fake.calls.clear()
    assert [engine.generate([c], hot)[0].text for c in convs] == drafted
    assert all(len(c) == 1 for c in fake.calls if len(c) < 12)  # no drafts: a call per token
    monkeypatch.undo()

    # the last row of a batch still answering drafts too
    prompts = [engine.prompt_ids(c) for c in convs[:2]]
    budgets = [GenerationSettings(max_new_tokens=3), greedy]
    fake.calls.clear()
    got = engine.run_batch(prompts, [engine.row_decoder(len(p), b) for p, b in zip(prompts, budgets)], greedy)
    assert [a.completion_tokens for a in got] == [3, 40] and got[1].text == expected[1].text
    assert expected[0].text.startswith(got[0].text)
    assert any(len(c) > 2 and {s for s, _ in c} == {1} for c in fake.calls)

    # a sliding-window model: drafted tokens that leave the cache again would leave it short of
    # cells once a sequence is past the window, so drafting stops there
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2)
    prompt_len = len(engine.prompt_ids(convs[2]))
    fake.n_swa = engine.n_swa = prompt_len + 12
    assert engine.generate([convs[2]], greedy)[0].text == expected[2].text
    steps = fake.calls[1:]
    assert any(len(c) > 1 for c in steps)
    assert all(pos < fake.n_swa for c in steps if len(c) > 1 for _, pos in c)
    assert any(pos >= fake.n_swa for c in steps for _, pos in c)  # it went on, a token per call

    # a recurrent model (a Mamba or hybrid .gguf) cannot drop tokens from its state: no drafts
    fake.llama_model_is_recurrent = lambda model: True
    fake.n_swa = 0
    engine = lc.LlamaCppGenerator(engine.gguf, torch_generator.tokenizer, max_batch=2)
    fake.calls.clear()
    assert engine.generate([convs[2]], greedy)[0].text == expected[2].text
    assert all(len(c) == 1 for c in fake.calls[1:])


@given(st.lists(st.integers(0, 5), max_size=40), st.integers(0, 12))
def test_lookup_continues_an_earlier_occurrence_of_the_tail(tokens, limit):
    draft = lc.lookup(tokens, limit)
    assert len(draft) <= limit
    n = next((n for n in lc.DRAFT_NGRAM if len(tokens) > n and any(
        tokens[s:s + n] == tokens[-n:] for s in range(len(tokens) - n))), None)
    if n is None or limit == 0:
        assert draft == []
        return
    start = next(s for s in range(len(tokens) - n) if tokens[s:s + n] == tokens[-n:])  # the first occurrence
    assert draft == tokens[start + n:start + n + limit] and draft


SYSTEM = ("Jesteś baristą kawiarni Ziarno. Odpowiadasz po polsku, krótko i uprzejmie, zwracasz się do klienta "
          "na Ty i kończysz pytaniem. Nie wymyślasz cen ani godzin otwarcia, których nie znasz.")


def _read(fake, seq: int) -> list[int]:
    """The positions of `seq` that llama_decode read, in order."""
    return [pos for call in fake.calls for s, pos in call if s == seq]


def test_a_shared_prompt_start_is_read_once_and_answers_the_same(monkeypatch, torch_generator, tmp_path):
    """A prompt start that requests share (a system prompt, a chat's earlier turns) is read once
    into a sequence of its own and copied into each sequence that begins with it, in this batch
    and in later ones; the answers equal the torch engine's, context-aware decoding included."""
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=3, prefill_chunk=16)
    start_seq = 6
    convs = [build_messages(p, SYSTEM) for p in PROMPTS]
    prompts = [engine.prompt_ids(c) for c in convs]
    n = lc.common_start(prompts)
    assert n >= lc.START_MIN
    settings = GenerationSettings(max_new_tokens=8)
    expected = [a.text for a in torch_generator.generate(convs, settings, batch_size=1)]
    got = engine.generate(convs, settings)
    assert [a.text for a in got] == expected
    assert _read(fake, start_seq) == list(range(n))  # the start, once
    assert sorted(fake.copies) == [(start_seq, 0), (start_seq, 1), (start_seq, 2)]
    assert all(min(_read(fake, i)) == n for i in range(3))  # each row reads only its own rest
    assert [a.cached_tokens for a in got] == [0, 0, 0]  # read in this batch, not for an earlier request
    fake.calls.clear()
    again = engine.generate(convs[::-1], settings)
    assert [a.text for a in again] == expected[::-1] and _read(fake, start_seq) == []
    assert [a.cached_tokens for a in again] == [n, n, n] and all(min(_read(fake, i)) == n for i in range(3))

    # one request at a time (chat, a server's lone request): the start it shares with the one
    # before is read once, and the third request reads only its rest
    other = [build_messages(p, SYSTEM.replace("Ziarno", "Pod Lipą")) for p in PROMPTS]
    m = lc.common_start([engine.prompt_ids(c) for c in other])
    fake.calls.clear()
    lone = [engine.generate([c], settings)[0] for c in other]
    assert [a.text for a in lone] == [a.text for a in torch_generator.generate(other, settings, batch_size=1)]
    keep = lc.common_start([prompts[0], engine.prompt_ids(other[0])])
    assert [a.cached_tokens for a in lone] == [0, keep, m]  # the part of the start held before
    assert _read(fake, start_seq) == list(range(keep, m))  # no sliding window: the shared part stays

    # a chat's next turn: the kept start grows to the previous prompt, the row reads only the new turn
    first = engine.generate([other[0]], settings)[0]
    assert first.cached_tokens == m
    turn = [*other[0], {"role": "assistant", "content": first.text}, {"role": "user", "content": "A na wynos?"}]
    grown = lc.common_start([engine.prompt_ids(turn), engine.prompt_ids(other[0])])
    assert grown >= len(engine.prompt_ids(other[0])) - 1
    fake.calls.clear()
    (answer,) = engine.generate([turn], settings)
    assert answer.text == torch_generator.generate([turn], settings)[0].text
    assert answer.cached_tokens == m and _read(fake, start_seq) == list(range(m, grown))
    assert min(_read(fake, 0)) == grown

    # context-aware decoding: the plain prompts (the same system prompt, no passages) start from it too
    knowing = [build_messages("Ile kosztuje wysyłka?", SYSTEM, context=SHIPPING),
               build_messages("Do kiedy mogę oddać kawę?", SYSTEM, context=RETURNS)]
    contrast = GenerationSettings(max_new_tokens=8, context_contrast=1.0)
    fake.copies.clear()
    got = engine.generate(knowing, contrast)
    assert [a.text for a in got] == [a.text for a in torch_generator.generate(knowing, contrast, batch_size=1)]
    assert {(start_seq, 3), (start_seq, 4)} <= set(fake.copies)

    # a call that fails while the start is read leaves no half-read start behind
    fake.fail_decode = True
    with pytest.raises(SpecialistError, match="decode failed"):
        engine.generate(convs, settings)
    fake.fail_decode = False
    assert [a.text for a in engine.generate(convs, settings)] == expected

    # a scored prompt (echo) reads every token for its logits; reuse off reads every prompt whole
    scored = engine.row_decoder(len(prompts[0]), settings, chat=False, prompt_logprobs=1)
    fake.calls.clear()
    engine.run_batch(prompts[:2], [scored, engine.row_decoder(len(prompts[1]), settings)], settings)
    assert min(_read(fake, 0)) == 0 and min(_read(fake, 1)) > 0
    fake, plain = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=3, reuse_starts=False)
    assert [a.text for a in plain.generate(convs, settings)] == expected
    assert not fake.copies and all(min(_read(fake, i)) == 0 for i in range(3))


def test_the_server_reports_the_prompt_tokens_a_kept_start_spared(monkeypatch, torch_generator, tmp_path):
    """Served on llama.cpp, a second request under the same system prompt starts from the first's
    kept start: OpenAI's usage.prompt_tokens_details.cached_tokens says how many tokens it spared."""
    import openai

    from specialist.serve.server import create_app
    from tests.helpers import running

    _, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2)
    convs = [build_messages(p, SYSTEM) for p in PROMPTS[:2]]
    n = lc.common_start([engine.prompt_ids(c) for c in convs])
    with running(create_app(engine, "tiny")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        usages = [client.chat.completions.create(model="tiny", messages=c, max_tokens=4, temperature=0).usage
                  for c in [*convs, convs[0]]]
    assert [u.prompt_tokens_details.cached_tokens for u in usages] == [0, 0, n]  # read for the 2nd, kept for the 3rd
    assert [u.prompt_tokens for u in usages] == [len(engine.prompt_ids(c)) for c in [*convs, convs[0]]]


def test_a_sliding_window_start_is_read_again_when_cut_back(monkeypatch, torch_generator, tmp_path):
    """A sliding-window layer keeps only its window behind a sequence's end, so a kept start
    longer than the window is not cut back to a shorter one: the shorter is read again."""
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2)
    fake.n_swa = engine.n_swa = 20
    settings = GenerationSettings(max_new_tokens=4)
    long = [build_messages(p, SYSTEM + " Pijesz kawę od rana.") for p in PROMPTS[:2]]
    engine.generate(long, settings)
    short = [build_messages(p, SYSTEM + " Lubisz herbatę.") for p in PROMPTS[:2]]
    n = lc.common_start([engine.prompt_ids(c) for c in short])
    fake.calls.clear()
    got = engine.generate(short, settings)
    assert _read(fake, 4) == list(range(n))
    assert [a.text for a in got] == [a.text for a in torch_generator.generate(short, settings, batch_size=1)]


@given(st.lists(st.lists(st.integers(0, 3), max_size=8), min_size=1, max_size=4), st.integers(0, 9))
def test_common_start_is_the_longest_shared_prefix(sequences, cap):
    n = lc.common_start(sequences, cap=cap)
    assert n <= min(cap, *map(len, sequences))
    assert all(s[:n] == sequences[0][:n] for s in sequences)
    if n < min(cap, *map(len, sequences)):
        assert len({s[n] for s in sequences}) > 1


def test_logprobs_equal_the_torch_engines(monkeypatch, torch_generator, tmp_path):
    """Completion and prompt log-probabilities (the server's logprobs and echo) from the same
    logits that pick the tokens, as the torch engine reports them; prompts scored in small
    chunks, a row with no room for new tokens only scored."""
    monkeypatch.setattr(lc, "SCORED_CHUNK", 5)
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=3)
    assert engine.scores_logprobs
    prompts = [torch_generator.tokenizer(t)["input_ids"] for t in ("Tell me", "A longer prompt about coffee", "x y")]
    settings = GenerationSettings(max_new_tokens=5)

    def rows(g):
        return [g.row_decoder(len(p), settings, chat=False, logprobs=2, prompt_logprobs=3 if i != 1 else None)
                for i, p in enumerate(prompts[:2])] + [
            g.row_decoder(len(prompts[2]), GenerationSettings(max_new_tokens=0), chat=False, prompt_logprobs=1)]

    got, expected = engine.run_batch(prompts, rows(engine), settings), torch_generator.run_batch(
        prompts, rows(torch_generator), settings)
    assert max(fake.decode_sizes) == 5
    for a, b in zip(got, expected):
        assert a.text == b.text and a.completion_tokens == b.completion_tokens
        for x, y in [*zip(a.logprobs or [], b.logprobs or []), *zip(a.prompt_logprobs or [], b.prompt_logprobs or [])]:
            assert (x is None) == (y is None)
            if x is not None:
                assert x.token == y.token and x.logprob == pytest.approx(y.logprob, abs=1e-4)
                assert [t for t, _ in x.top] == [t for t, _ in y.top]
        assert len(a.logprobs or []) == len(b.logprobs or []) and len(a.prompt_logprobs or []) == len(
            b.prompt_logprobs or [])
    assert got[0].logprobs and got[0].prompt_logprobs and got[1].prompt_logprobs is None
    assert got[2].completion_tokens == 0 and len(got[2].prompt_logprobs) == len(prompts[2])


def test_stream_and_length_limit(monkeypatch, torch_generator, tmp_path):
    conv = build_messages(PROMPTS[1])
    prompt_len = len(torch_generator.prompt_ids(conv))
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2, context_length=prompt_len + 8)
    settings = GenerationSettings(max_new_tokens=30)
    pieces = list(engine.stream(conv, settings))
    (answer,) = engine.generate([conv], settings)
    assert "".join(pieces).strip() == answer.text and answer.text
    # the context (8 tokens left per sequence) ends the answer before its 30-token budget
    assert answer.finish_reason == "length" and answer.completion_tokens == 8
    too_long = build_messages("kawa " * 60)
    with pytest.raises(SpecialistError, match=r"does not fit llama\.cpp's context"):
        engine.generate([too_long], settings)
    assert fake.ctx_params.kv_unified is False and fake.ctx_params.swa_full is False


def test_a_cancelled_row_stops_and_the_others_go_on(monkeypatch, torch_generator, tmp_path):
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=3)
    settings = GenerationSettings(max_new_tokens=10)
    prompts = [engine.prompt_ids(build_messages(p)) for p in PROMPTS]
    rows = [engine.row_decoder(len(p), settings) for p in prompts]
    rows[0].cancelled.set()  # gone before its turn: its prompt is never read
    seen = []
    rows[1].on_piece = lambda piece: (seen.append(piece), rows[1].cancelled.set())  # gone after its first piece
    answers = engine.run_batch(prompts, rows, settings)
    assert rows[0].finish_reason == rows[1].finish_reason == "cancelled"
    assert answers[0].completion_tokens == 0 and 1 <= answers[1].completion_tokens < 10 and len(seen) == 1
    expected = torch_generator.generate([build_messages(PROMPTS[2])], settings)[0]
    assert answers[2].text == expected.text  # the row left alone answers as if alone
    assert 0 not in fake.seqs


def test_sampling_follows_the_seed_and_a_failed_decode_is_an_error(monkeypatch, torch_generator, tmp_path):
    fake, engine = fake_engine(monkeypatch, torch_generator, tmp_path)
    conv = [build_messages(PROMPTS[0])]
    hot = GenerationSettings(max_new_tokens=12, temperature=1.5, seed=7)
    first, again = engine.generate(conv, hot)[0].text, engine.generate(conv, hot)[0].text
    other = engine.generate(conv, GenerationSettings(max_new_tokens=12, temperature=1.5, seed=8))[0].text
    assert first == again and first != other
    fake.fail_decode = True
    with pytest.raises(SpecialistError, match="decode failed"):
        engine.generate(conv, hot)


def test_a_gguf_model_runs_as_it_is(monkeypatch, torch_generator, lively_model, tmp_path):
    """A .gguf reference is loaded as it is, with the tokenizer read from the file itself (no
    conversion, no export), and answers like the model it was made from."""
    from specialist.export.build import export
    from specialist.inference import gguf_cache

    result = export(str(lively_model), "gguf", tmp_path / "g", "f16")
    (name,) = [f for f in result.files if f.endswith(".gguf")]
    gguf = tmp_path / "g" / name
    fake = FakeLlamaCpp(torch_generator.model)
    loaded = []
    real_load = fake.llama_model_load_from_file
    monkeypatch.setattr(fake, "llama_model_load_from_file", lambda path, params: (loaded.append(path),
                                                                                  real_load(path, params))[1])
    monkeypatch.setattr(lc, "require_llama_cpp", lambda: fake)
    monkeypatch.setattr(gguf_cache, "engine_gguf",
                        lambda *a, **k: pytest.fail("a .gguf model must not be exported again"))
    engine = make_generator(str(gguf), "llama.cpp", max_batch=2)
    assert [Path(p.decode() if isinstance(p, bytes) else p) for p in loaded] == [gguf]
    settings = GenerationSettings(max_new_tokens=10)
    convs = [build_messages(p) for p in PROMPTS[:2]]
    got = engine.generate(convs, settings)
    expected = torch_generator.generate(convs, settings, batch_size=1)
    assert [a.text for a in got] == [a.text for a in expected] and all(a.text for a in got)
    with pytest.raises(SpecialistError, match=r"--quant does not apply to a \.gguf"):
        make_generator(str(gguf), "llama.cpp", quant="q8_0")


def test_amx_builds_run_without_the_extra_buffer_types(monkeypatch, torch_generator, tmp_path):
    fake, _ = fake_engine(monkeypatch, torch_generator, tmp_path, system_info="AVX512 = 1 | AMX_INT8 = 1 |")
    assert fake.model_params.use_extra_bufts is False
    fake, _ = fake_engine(monkeypatch, torch_generator, tmp_path)
    assert fake.model_params.use_extra_bufts is True


def test_a_gguf_llama_cpp_cannot_load_is_a_clear_error(monkeypatch, torch_generator, tmp_path):
    fake = FakeLlamaCpp(torch_generator.model)
    monkeypatch.setattr(lc, "require_llama_cpp", lambda: fake)
    with pytest.raises(SpecialistError, match="could not load"):
        lc.LlamaCppGenerator(tmp_path / "missing.gguf", torch_generator.tokenizer)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    fake.fail_context = True
    with pytest.raises(SpecialistError, match="could not create a context"):
        lc.LlamaCppGenerator(gguf, torch_generator.tokenizer)
    import gc

    gc.collect()  # __del__ of the half-built engine must not free the model a second time
    assert fake.models_freed == 1


def test_sampling_keeps_to_the_nucleus_and_follows_the_seed():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    draws = [sample(logits, 1.0, 0.7, np.random.default_rng(s)) for s in range(300)]
    assert set(draws) == {0, 1}  # 0.5 + 0.3 reaches 0.7; the tail is never drawn
    assert 0.5 < draws.count(0) / 300 < 0.75  # 0.5/0.8 = 0.625
    again = [sample(logits, 1.0, 0.7, np.random.default_rng(s)) for s in range(300)]
    assert draws == again
    cold = {sample(logits, 0.05, 1.0, np.random.default_rng(s)) for s in range(50)}
    assert cold == {0}


def test_engine_choice_errors(monkeypatch, tiny_chat_model):
    with pytest.raises(SpecialistError, match="unknown --engine"):
        make_generator(str(tiny_chat_model), "vllm")
    with pytest.raises(SpecialistError, match="unknown --quant"):
        make_generator(str(tiny_chat_model), "llama.cpp", quant="q5")
    with pytest.raises(SpecialistError, match=r"llama\.cpp only"):
        make_generator(str(tiny_chat_model), "torch", quant="q8_0")

    def missing():
        raise SpecialistError(f"--engine llama.cpp needs llama-cpp-python: {lc.INSTALL_HINT}", exit_code=2)

    monkeypatch.setattr(lc, "require_llama_cpp", missing)
    with pytest.raises(SpecialistError, match="make llama-cpp"):
        make_generator(str(tiny_chat_model), "llama.cpp")


def test_auto_takes_llama_cpp_where_it_is_installed_and_says_so(monkeypatch, torch_generator, tiny_chat_model,
                                                                 tmp_path, capsys):
    from specialist.inference import engines

    monkeypatch.delenv(engines.ENGINE_ENV)
    installed = {"yes": True}
    monkeypatch.setattr(engines, "llama_cpp_available", lambda: installed["yes"])
    assert engines.choose_engine("auto") == "llama.cpp"
    assert "engine: llama.cpp (llama-cpp-python is installed" in capsys.readouterr().err
    assert engines.choose_engine("auto", dtype="fp32") == "torch"  # a torch generation path was asked for
    assert engines.choose_engine("auto", models=2) == "torch"  # a server of several runs shares their base
    assert engines.choose_engine("torch") == "torch" and engines.choose_engine("llama.cpp") == "llama.cpp"
    # a model the GGUF writer cannot write stays on torch
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1).save_pretrained(tmp_path / "qwen")
    assert engines.choose_engine("auto", model_ref=str(tmp_path / "qwen")) == "torch"
    assert "runs Llama and Gemma 3 models" in capsys.readouterr().err
    assert engines.choose_engine("auto", model_ref=str(tiny_chat_model)) == "llama.cpp"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engines.choose_engine("auto") == "torch"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    installed["yes"] = False
    assert engines.choose_engine("auto", quant="q8_0") == "llama.cpp"  # and then says it is missing
    assert engines.choose_engine("auto") == "torch"
    assert "make llama-cpp" in capsys.readouterr().err
    installed["yes"] = True
    monkeypatch.setenv(engines.ENGINE_ENV, "torch")
    assert engines.choose_engine("auto") == "torch"
    monkeypatch.setenv(engines.ENGINE_ENV, "vllm")
    with pytest.raises(SpecialistError, match="SPECIALIST_ENGINE='vllm'"):
        engines.choose_engine("auto")
    # the default of make_generator (chat, serve, generate, the studio) is auto
    monkeypatch.delenv(engines.ENGINE_ENV)
    fake = FakeLlamaCpp(torch_generator.model)
    monkeypatch.setattr(lc, "require_llama_cpp", lambda: fake)
    exported = []
    monkeypatch.setattr("specialist.inference.gguf_cache.engine_gguf",
                        lambda ref, outtype="q8_0", kept=None: exported.append(outtype) or tmp_path / "m.gguf")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    made = make_generator(str(tiny_chat_model))
    assert isinstance(made, lc.LlamaCppGenerator) and made.reuses_starts  # the prompt cache is on by default
    # the GGUF type per CPU: bf16 where this llama.cpp computes it natively, else 8-bit; said, and
    # --quant decides over it
    assert exported == ["q8_0"] and "llama.cpp weights: q8_0 (8-bit" in capsys.readouterr().err
    fake.system_info = "AVX2 = 1 | AVX512 = 1 | AVX512_BF16 = 1 |"
    make_generator(str(tiny_chat_model))
    assert exported[-1] == "bf16" and "llama.cpp weights: bf16 (this CPU computes bf16" in capsys.readouterr().err
    make_generator(str(tiny_chat_model), quant="q8_0")
    assert exported[-1] == "q8_0" and "llama.cpp weights" not in capsys.readouterr().err
    monkeypatch.setenv(engines.PROMPT_CACHE_ENV, "off")
    assert not make_generator(str(tiny_chat_model)).reuses_starts
    assert make_generator(str(tiny_chat_model), prompt_cache=True).reuses_starts  # the caller's word decides
    monkeypatch.setenv(engines.PROMPT_CACHE_ENV, "maybe")
    with pytest.raises(SpecialistError, match="SPECIALIST_PROMPT_CACHE='maybe': use on or off"):
        make_generator(str(tiny_chat_model))


def test_a_too_old_llama_cpp_python_is_named(monkeypatch):
    old = SimpleNamespace(__version__="0.2.90", llama_decode=None, llama_batch_init=None)
    monkeypatch.setitem(sys.modules, "llama_cpp", old)
    with pytest.raises(SpecialistError, match=r"0\.2\.90 is too old.*llama_get_memory"):
        lc.require_llama_cpp()


def test_cli_reports_a_missing_llama_cpp_in_one_line(tiny_chat_model, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` fails, whatever is installed
    proc = run_cli("generate", "--model", tiny_chat_model, "--engine", "llama.cpp", "--prompt", "hej")
    assert proc.exit_code == 2
    assert "needs llama-cpp-python" in proc.stderr and "Traceback" not in proc.stderr


def test_engine_gguf_is_exported_once_and_redone_for_new_weights(monkeypatch, tiny_chat_model, tmp_path):
    import shutil

    from specialist.inference import gguf_cache

    model = tmp_path / "model"
    shutil.copytree(tiny_chat_model, model)
    calls = []
    real_save = gguf_cache.save_gguf

    def counting_save(*args, **kwargs):
        calls.append(args)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(gguf_cache, "save_gguf", counting_save)
    first = engine_gguf(str(model), "f16")
    again = engine_gguf(str(model), "f16")
    assert first == again and first.suffix == ".gguf" and len(calls) == 1
    assert engine_gguf(str(first)) == first  # a .gguf reference is used as it is
    weights = next(model.glob("*.safetensors"))
    weights.touch()
    import os

    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    renewed = engine_gguf(str(model), "f16")
    assert renewed != first and len(calls) == 2
    # a kept vocabulary is a file of its own, with the input embeddings beside it, per kept set
    kept = engine_gguf(str(model), "f16", kept=[0, 1, 2, 40, 41])
    assert kept.parent != renewed.parent and len(calls) == 3
    inputs = np.load(kept.parent / gguf_cache.INPUTS)
    assert inputs.dtype == np.float16 and inputs.shape[0] == load_model(str(model)).model.config.vocab_size
    assert engine_gguf(str(model), "f16", kept=[0, 1, 2, 40, 41]) == kept and len(calls) == 3
    assert engine_gguf(str(model), "f16", kept=[0, 1, 2, 40]).parent != kept.parent
    (kept.parent / gguf_cache.INPUTS).write_bytes(b"not numpy")
    with pytest.raises(SpecialistError, match="unreadable"):
        gguf_cache.load_inputs(kept)
    (kept.parent / gguf_cache.INPUTS).unlink()
    with pytest.raises(SpecialistError, match="delete the folder"):
        engine_gguf(str(model), "f16", kept=[0, 1, 2, 40, 41])


def test_the_engine_cache_keeps_within_its_budget_least_recently_used_first(monkeypatch, tiny_chat_model,
                                                                            tmp_path, capsys):
    import os

    from specialist.inference import gguf_cache

    first = engine_gguf(str(tiny_chat_model), "f16")
    size = sum(f.stat().st_size for f in first.parent.rglob("*") if f.is_file())
    second = engine_gguf(str(tiny_chat_model), "q8_0")
    os.utime(first.parent, (1, 1))
    os.utime(second.parent, (2, 2))
    engine_gguf(str(tiny_chat_model), "f16")  # used again: now the most recent
    assert first.parent.stat().st_mtime > second.parent.stat().st_mtime
    # room for two entries of this size: a third export removes the one used least recently
    monkeypatch.setenv(gguf_cache.CACHE_BUDGET_ENV, str(2.5 * size / 1e9))
    (first.parent.parent / ".half-written.tmp-1").mkdir()  # another export's unfinished folder stays
    third = engine_gguf(str(tiny_chat_model), "bf16")
    assert third.exists() and first.exists() and not second.parent.exists()
    assert (first.parent.parent / ".half-written.tmp-1").exists()
    assert "engine cache: removed 1 GGUF(s) used least recently" in capsys.readouterr().err
    # the entry just made stays even when alone it is over the budget
    monkeypatch.setenv(gguf_cache.CACHE_BUDGET_ENV, "0")
    assert gguf_cache.prune(third.parent) == [first.parent] and third.exists()
    monkeypatch.setenv(gguf_cache.CACHE_BUDGET_ENV, "lots")
    monkeypatch.setattr(gguf_cache, "save_gguf", None)  # said before any export begins
    with pytest.raises(SpecialistError, match="SPECIALIST_ENGINE_CACHE_GB='lots'"):
        engine_gguf(str(tiny_chat_model), "q8_0")


# ---------------------------------------------------------------- the real llama.cpp (slow)
def _llama_cpp_or_skip():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp)")


ENGINE_RUNNER = r"""
import json, sys
from specialist.models.resolve import load_tokenizer
from specialist.models.template import build_messages
from specialist.inference.llama_cpp_engine import LlamaCppGenerator
from specialist.inference.sampling import GenerationSettings
gguf, ref, n, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
engine = LlamaCppGenerator(gguf, load_tokenizer(ref), max_batch=4)
convs = [build_messages(p) for p in prompts]
s = GenerationSettings(max_new_tokens=n)
one = [engine.generate([c], s)[0].text for c in convs]
batched = [a.text for a in engine.generate(convs, s)]
print(json.dumps({"one": one, "batched": batched}))
"""


def engine_answers(gguf: Path, ref: str, n: int, prompts: list[str]) -> dict:
    """In a child process, so a native crash fails the test instead of ending the run."""
    import json

    proc = subprocess.run([sys.executable, "-c", ENGINE_RUNNER, str(gguf), ref, str(n), json.dumps(prompts)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_real_llama_cpp_engine_answers_like_pytorch_smollm2(tmp_path):
    _llama_cpp_or_skip()
    from tests.test_export import PROMPTS as EXPORT_PROMPTS
    from tests.test_export import export_gguf_ref

    gguf = export_gguf_ref("smollm2-135m-instruct", tmp_path / "g", "f16")
    gen = TorchGenerator(load_model("smollm2-135m-instruct", dtype="float32"))
    expected = [a.text for a in gen.generate([build_messages(p) for p in EXPORT_PROMPTS],
                                             GenerationSettings(max_new_tokens=24), batch_size=1)]
    got = engine_answers(gguf, "smollm2-135m-instruct", 24, EXPORT_PROMPTS)
    assert got["one"] == expected
    assert got["batched"] == expected  # parallel sequences do not leak into each other


@pytest.mark.slow
def test_real_llama_cpp_engine_runs_gemma3_q8_0(tmp_path):
    """What --engine llama.cpp runs by default (Gemma 3 in q8_0): it runs on any llama.cpp
    build, AMX ones included, and batched answers equal one-at-a-time answers."""
    _llama_cpp_or_skip()
    from tests.test_export import export_gguf_ref

    gguf = export_gguf_ref("gemma-3-270m", tmp_path / "g", "q8_0")
    got = engine_answers(gguf, "gemma-3-270m", 16, PROMPTS)
    assert got["one"] == got["batched"]
    assert all(got["one"])


START_RUNNER = r"""
import json, sys
import numpy as np
from specialist.inference.llama_cpp_engine import LlamaCppGenerator, common_start
from specialist.inference.sampling import GenerationSettings
from specialist.models.resolve import load_tokenizer
from specialist.models.template import build_messages
gguf, ref = sys.argv[1], sys.argv[2]
engine = LlamaCppGenerator(gguf, load_tokenizer(ref), max_batch=2)
lib, mem, start_seq = engine._lib, engine._memory, 4
system = " ".join(["Kawiarnia Ziarno poleca espresso, latte i sernik."] * 60)
convs = [build_messages(q, system) for q in ("Ile kosztuje latte?", "Czy macie sernik?")]
prompts = [engine.prompt_ids(c) for c in convs]
n = common_start(prompts, cap=min(map(len, prompts)) - 1)

def last_logits(p, copied):
    lib.llama_memory_clear(mem, False)
    out = []
    engine._feed([(t, k, start_seq if copied else 0, False) for k, t in enumerate(p[:n])], 512, lambda e, l: None)
    if copied:
        lib.llama_memory_seq_cp(mem, start_seq, 0, -1, -1)
    engine._feed([(t, k, 0, k == len(p) - 1) for k, t in enumerate(p) if k >= n], 512,
                 lambda e, l: out.append(np.array(l)))
    return out[-1]

same = [bool((last_logits(p, True) == last_logits(p, False)).all()) for p in prompts]
engine._start = []  # the probes above used the start sequence behind the engine's back
s = GenerationSettings(max_new_tokens=12)
first = [engine.generate([c], s)[0] for c in convs]
again = [engine.generate([c], s)[0] for c in convs]
print(json.dumps({"n": n, "n_swa": engine.n_swa, "same": same, "cached": [a.cached_tokens for a in first + again],
                  "first": [a.text for a in first], "again": [a.text for a in again]}))
"""


@pytest.mark.slow
def test_real_llama_cpp_starts_from_a_copied_prompt_start_gemma3(tmp_path):
    """On the real llama.cpp (Gemma 3, a start longer than its 512-position sliding window): a
    sequence started from a copy of the kept start has bit for bit the logits of reading the
    start in it, and a request under the same system prompt reports the start as cached."""
    import json

    _llama_cpp_or_skip()
    from tests.test_export import export_gguf_ref

    gguf = export_gguf_ref("gemma-3-270m", tmp_path / "g", "q8_0")
    proc = subprocess.run([sys.executable, "-c", START_RUNNER, str(gguf), "gemma-3-270m"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["n"] > got["n_swa"] > 0 and got["same"] == [True, True]
    n = got["n"]
    assert got["cached"] == [0, 0, n, n]  # the second request read the start, the later ones reuse it
    assert got["again"][1] == got["first"][1] and all(got["again"])  # the same cut, the same answer


KEPT_RUNNER = r"""
import json, sys
import numpy as np
from specialist.inference.gguf_cache import INPUTS, engine_gguf
from specialist.inference.llama_cpp_engine import LlamaCppGenerator
from specialist.inference.sampling import GenerationSettings
from specialist.models.resolve import load_tokenizer
from specialist.models.template import build_messages
ref, n, kept, prompts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
gguf = engine_gguf(ref, "f16", kept)
engine = LlamaCppGenerator(gguf, load_tokenizer(ref), max_batch=4, kept=kept,
                           inputs=np.load(gguf.parent / INPUTS, mmap_mode="r"))
s = GenerationSettings(max_new_tokens=n)
print(json.dumps([a.text for a in engine.generate([build_messages(p) for p in prompts], s)]))
"""


@pytest.mark.slow
def test_real_llama_cpp_runs_a_kept_vocabulary_gguf_like_pytorch_smollm2(tmp_path):
    """The real llama.cpp on a GGUF of kept tokens, the prompt given as input embeddings (no
    token ids): the same greedy answers as PyTorch with the same kept head (f16 weights, as the
    full-vocabulary test above)."""
    import json

    _llama_cpp_or_skip()
    from specialist.models.vocab_head import use_kept_head
    from tests.test_export import PROMPTS as EXPORT_PROMPTS

    loaded = load_model("smollm2-135m-instruct", dtype="float32")
    gen = TorchGenerator(loaded)
    convs = [build_messages(p) for p in EXPORT_PROMPTS]
    texts = [a.text for a in gen.generate(convs, GenerationSettings(max_new_tokens=24), batch_size=1)]
    kept = sorted({*range(2000), *(t for c in convs for t in gen.prompt_ids(c)), *gen.eos_ids,
                   *(t for x in texts for t in gen.tokenizer(x, add_special_tokens=False).input_ids)})
    use_kept_head(loaded.model, kept, vocab_logits=True, frozen=True)
    expected = [a.text for a in gen.generate(convs, GenerationSettings(max_new_tokens=24), batch_size=1)]
    proc = subprocess.run([sys.executable, "-c", KEPT_RUNNER, "smollm2-135m-instruct", "24", json.dumps(kept),
                           json.dumps(EXPORT_PROMPTS)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected and all(expected)
