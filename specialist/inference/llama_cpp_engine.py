"""Decode with llama.cpp instead of PyTorch: the faster path on a CPU.

`LlamaCppGenerator` is a `Generator` whose `run_batch` runs a GGUF through llama.cpp (the C API
that llama-cpp-python binds) instead of `transformers.generate`. Everything else is shared:
prompts are encoded by the model's Hugging Face tokenizer with models.template (exactly as in
training), and each row's tokens go through the same RowDecoder (stop strings, end-of-turn,
token budget, streaming, cancellation), so generate, chat and serve behave the same on either
engine. A batch of prompts decodes as parallel llama.cpp sequences: one step reads the weights
once for every row, which is what makes batched serving pay off.

Context-aware decoding (contrast.py) runs here too: a row with a `contrast` prompt (its
question without the retrieved passages) gets a second sequence in the same batch, fed the same
tokens, and its next token is picked from the two rows' logits by contrast.contrast over the
plausible candidates, as the torch engine does. A run with a specialist-sized output head
(models/vocab_head.py) writes only its kept tokens here as well, from a GGUF of those tokens
(gguf_cache.py).

A prompt start that several requests share (a system prompt with few-shot examples, a chat's
earlier turns) is read once: it stays in a sequence of its own across batches, and a sequence
that begins with it starts from a copy of its cache (`_reuse_start`), as llama.cpp's own server
and vLLM cache prompt prefixes.

A lone row (chat, or the last of a batch still answering) also drafts by prompt lookup
(`lookup`): tokens that followed the answer's last few tokens in its prompt ride along in the
step's call and are kept where they are the row's pick, so a knowledge-base answer that quotes
its passages takes fewer steps.

The GGUF is the model exported once (gguf_cache.py): bf16 where this llama.cpp computes it
natively, q8_0 elsewhere (engines.default_quant). q4_0 is faster still but breaks this small
model's answers (benchmarks/README.md has them measured)."""

from __future__ import annotations

import collections
import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from specialist.errors import SpecialistError
from specialist.inference.batching import common_start
from specialist.inference.contrast import PLAUSIBLE, contrast
from specialist.inference.generator import Answer, Generator, finish_rows
from specialist.inference.logprobs import TokenLogprob
from specialist.inference.sampling import GenerationSettings, sample
from specialist.inference.stops import RowDecoder
from specialist.models.device import available_cpus
from specialist.models.template import Message

INSTALL_HINT = "make llama-cpp (or pip install 'llama-cpp-python>=0.3.36'; on CPUs with AMX see the README)"
# the parts of the C API (llama.cpp's memory API, from llama-cpp-python 0.3.36 on) this engine calls
# prompt tokens per llama_decode when a row's prompt is scored: each wants its logits kept (1 MB
# apiece for a 262k vocabulary), which a chunk of 512 would make half a gigabyte
SCORED_CHUNK = 64
_API = ("llama_get_memory", "llama_memory_clear", "llama_memory_seq_rm", "llama_batch_init", "llama_decode",
        "llama_get_logits_ith", "llama_n_ctx_seq", "llama_model_load_from_file", "llama_init_from_model",
        "llama_vocab_n_tokens", "llama_model_n_swa", "llama_model_is_recurrent", "llama_model_is_hybrid",
        "llama_memory_seq_cp")
# prompt lookup (a lone row): the answer's last DRAFT_NGRAM tokens (the longest first) are looked
# up in the prompt and the answer before them, and up to DRAFT_TOKENS of what followed them ride along in
# the step's call, each checked against the token the step picks. Measured on coffee answers with
# their knowledge base (benchmarks/README.md): 4 then 3 tokens, 10 drafted, decode 1.6x fewer
# milliseconds per token than a call per token; drafting on a single token's match costs more
# calls than it saves.
DRAFT_NGRAM = (4, 3)
DRAFT_TOKENS = 10
# the shortest prompt start worth keeping for the next requests: a sequence starts from a copy of
# its whole cache (llama.cpp copies a sequence's buffers whole between separate caches), a few
# milliseconds, where reading 32 tokens takes some 40 ms on a 2-core CPU even for a 270M model
START_MIN = 32


def require_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise SpecialistError(f"--engine llama.cpp needs llama-cpp-python: {INSTALL_HINT}", exit_code=2) from exc
    missing = [name for name in _API if not hasattr(llama_cpp, name)]
    if missing:
        raise SpecialistError(f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')} is too old for --engine "
                              f"llama.cpp (no {', '.join(missing)}): {INSTALL_HINT}", exit_code=2)
    return llama_cpp


class _Log:
    """llama.cpp's log, kept (not printed) so a failure can say what llama.cpp said. The
    callback replaces llama-cpp-python's verbose=False mode, which crashes in 0.3.x."""

    lines: ClassVar[collections.deque[str]] = collections.deque(maxlen=30)
    _callback = None

    @classmethod
    def install(cls, llama_cpp: Any) -> None:
        if cls._callback is None:
            def sink(level: int, text: bytes, user_data: Any) -> None:
                if text:
                    cls.lines.append(text.decode("utf-8", "replace").rstrip())
            cls._callback = llama_cpp.llama_log_callback(sink)  # kept alive: C holds the pointer
            llama_cpp.llama_log_set(cls._callback, ctypes.c_void_p())

    @classmethod
    def tail(cls, n: int = 3) -> str:
        return " / ".join(line for line in list(cls.lines)[-n:] if line)


class LlamaCppGenerator(Generator):
    """A Generator over a GGUF file. `tokenizer` is the Hugging Face tokenizer of the same model
    (the GGUF's token ids are the same ids); `context_length` is per sequence. `kept`: the token
    ids a specialist-sized head keeps (the run's vocabulary.json), None for all; the cache holds a
    second sequence per row for context-aware decoding (twice the rows' cache). `inputs`: with a
    kept-vocabulary GGUF (gguf_cache.py), the input embedding of every token, through which the
    prompt goes in. Log-probabilities (inference/logprobs.py) come
    from the logits that pick the tokens: a completion token's from its step (over the kept head,
    as on torch), a prompt token's from the prompt's own pass (over the whole vocabulary, which a
    kept-vocabulary GGUF does not have: `scores_prompts`)."""

    scores_logprobs = True
    contrasts = True

    def __init__(self, gguf: Path, tokenizer: Any, threads: int | None = None, max_batch: int = 8,
                 context_length: int = 4096, prefill_chunk: int = 512, kept: Sequence[int] | None = None,
                 inputs: np.ndarray | None = None, reuse_starts: bool = True) -> None:
        llama_cpp = require_llama_cpp()
        _Log.install(llama_cpp)
        llama_cpp.llama_backend_init()
        self._lib = llama_cpp
        self._lock = threading.Lock()
        self.gguf = Path(gguf)
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.threads = threads or available_cpus()
        # row i's plain prompt (context-aware decoding) is sequence max_batch + i; the last holds the
        # prompt start kept for the next batches (`_reuse_start`)
        seqs = 2 * max_batch + 1
        self._start_seq = 2 * max_batch
        self._start: list[int] = []  # the tokens that sequence holds
        self._last: list[int] = []  # the previous batch's first prompt, whose start a lone request may share

        mparams = llama_cpp.llama_model_default_params()
        self.amx = built_with(llama_cpp, "AMX_INT8")
        if self.amx:
            # llama.cpp's AMX int8 kernels (ggml_backend_amx_mul_mat) crash on Gemma 3's quantized
            # weights; without the extra buffer types the plain CPU kernels run (no AMX, no repacking)
            if "use_extra_bufts" not in dict(type(mparams)._fields_):  # ctypes would accept it silently
                raise SpecialistError("this llama-cpp-python was built with AMX kernels, which crash on quantized "
                                      f"Gemma 3 weights, and cannot turn them off: {INSTALL_HINT}", exit_code=2)
            mparams.use_extra_bufts = False
        self._model = llama_cpp.llama_model_load_from_file(str(self.gguf).encode(), mparams)
        if not self._model:
            raise SpecialistError(f"{self.gguf}: llama.cpp could not load it ({_Log.tail()})", exit_code=2)
        train_ctx = int(llama_cpp.llama_model_n_ctx_train(self._model))
        per_seq = min(context_length, train_ctx) if train_ctx > 0 else context_length
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = per_seq * seqs
        cparams.n_batch = cparams.n_ubatch = max(prefill_chunk, seqs)
        cparams.n_seq_max = seqs
        cparams.kv_unified = False  # each sequence its own cache of per_seq positions
        # the cache is cleared for every batch and never shifted or branched, so the sliding-window
        # layers need only their window, not a full-length cache
        cparams.swa_full = False
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self._free()  # the model, once (__del__ finds nothing left to free)
            raise SpecialistError(f"{self.gguf}: llama.cpp could not create a context ({_Log.tail()})", exit_code=2)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        # positions a sliding-window layer attends back (0: none has a window). Drafted tokens that
        # fail the check are taken out of the cache again, which is exact only while no sequence
        # has gone past the window: beyond it llama.cpp reuses the cells that fell out of it
        self.n_swa = int(llama_cpp.llama_model_n_swa(self._model))
        # a recurrent state (Mamba, hybrids; a .gguf passed as it is) cannot drop its last tokens
        self.drafts = not (llama_cpp.llama_model_is_recurrent(self._model)
                           or llama_cpp.llama_model_is_hybrid(self._model))
        self.reuses_starts = reuse_starts and self.drafts
        vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        # a kept-vocabulary GGUF (gguf_writer `kept`): its id i is token kept[i], and the prompt goes
        # in as the model's input embedding vectors (`inputs`: one row per token of the whole vocabulary)
        self._inputs = inputs
        self._rows: np.ndarray | None = None
        if inputs is not None:
            self._rows = np.asarray(sorted(set(kept or ())), dtype=np.int64)
            if len(self._rows) != self.n_vocab or inputs.ndim != 2:
                self._free()
                raise SpecialistError(f"{self.gguf}: {self.n_vocab} tokens, but {len(self._rows)} kept ids and input "
                                      f"embeddings of shape {inputs.shape}; delete it and run again", exit_code=2)
            self.n_vocab = int(inputs.shape[0])
        self._batch = llama_cpp.llama_batch_init(cparams.n_batch, 0 if inputs is None else int(inputs.shape[1]), seqs)
        self._embd = (None if inputs is None
                      else np.ctypeslib.as_array(self._batch.embd, shape=(cparams.n_batch, int(inputs.shape[1]))))
        self._dropped: np.ndarray | None = None  # True for the tokens outside the kept head
        if kept is not None and inputs is None:
            self._dropped = np.ones(self.n_vocab, dtype=bool)
            self._dropped[np.asarray([t for t in kept if t < self.n_vocab], dtype=np.int64)] = False

        super().__init__(tokenizer, int(llama_cpp.llama_n_ctx_seq(self._ctx)))
        if len(tokenizer) > self.n_vocab + 64:  # a few added tokens beyond the matrix are usual
            self._free()
            raise SpecialistError(f"{self.gguf}: its vocabulary ({self.n_vocab}) does not match the tokenizer "
                                  f"({len(tokenizer)}); pass the GGUF exported from this model", exit_code=2)

    @property
    def scores_prompts(self) -> bool:
        """A kept-vocabulary GGUF has no logits for the other tokens, which a prompt may hold."""
        return self._rows is None

    # ------------------------------------------------------------ llama.cpp calls
    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode over (token, position, sequence, wants logits) entries."""
        b = self._batch
        if self._embd is not None:
            ids = [e[0] for e in entries]
            if max(ids) >= len(self._inputs):
                raise SpecialistError(f"token id {max(ids)} is outside the model's {len(self._inputs)} "
                                      "input embeddings")
            self._embd[:len(entries)] = self._inputs[ids]
        for i, (token, pos, seq, logits) in enumerate(entries):
            if self._embd is None:
                b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(entries)
        rc = self._lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise SpecialistError(f"llama.cpp decode failed (code {rc}: {_Log.tail()})")

    def _logits(self, index: int) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self._ctx, index)
        if not ptr:
            raise SpecialistError(f"llama.cpp returned no logits for batch entry {index} ({_Log.tail()})")
        if self._rows is None:
            return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        full = np.full(self.n_vocab, -np.inf, dtype=np.float32)  # the kept head's logits at their token ids
        full[self._rows] = np.ctypeslib.as_array(ptr, shape=(len(self._rows),))
        return full

    def _kept_copy(self, logits: np.ndarray) -> np.ndarray:
        """A row's logits over the kept head, in an array of its own (the next decode overwrites
        llama.cpp's buffer; a kept-vocabulary GGUF's logits are a new array already)."""
        if self._dropped is not None:
            return np.where(self._dropped, np.float32(-np.inf), logits)
        return logits if self._rows is not None else logits.copy()

    def _pick(self, model: np.ndarray, settings: GenerationSettings, rng: np.random.Generator,
              row: RowDecoder, plain: np.ndarray | None = None) -> tuple[int, TokenLogprob | None]:
        """The next token from a row's logits over the kept head (`plain`: its plain prompt's,
        for context-aware decoding), in the torch engine's order: contrast, then the number
        guard; and its log-probability under the model when the row asks for them."""
        logits = model
        if row.contrast is not None:
            logits = contrasted(logits, plain, row.contrast_alpha)
        if row.guard is not None:
            if logits is model:
                logits = logits.copy()  # llama.cpp's own buffer (and the model's scores) stay as they are
            row.guard.apply(row.text, logits)
        token = int(logits.argmax()) if settings.greedy else sample(logits, settings.temperature, settings.top_p, rng)
        if row.logprobs is None:
            return token, None
        return token, score(model, token, row.logprobs)

    def _feed(self, entries: list[tuple[int, int, int, bool]], size: int,
              take: Callable[[tuple[int, int, int, bool], np.ndarray], None]) -> None:
        """Decode (token, position, sequence, wants logits) entries in chunks of `size`, handing
        each wanted entry's logits to `take` before the next chunk overwrites them."""
        for start in range(0, len(entries), size):
            chunk = entries[start:start + size]
            self._decode(chunk)
            for j, entry in enumerate(chunk):
                if entry[3]:
                    take(entry, self._logits(j))

    # ------------------------------------------------------------ the Generator interface
    def run_batch(self, prompts: list[list[int]], rows: Sequence[RowDecoder], settings: GenerationSettings,
                  adapters: Sequence[str | None] | None = None) -> list[Answer]:
        """Decode the prompts as parallel sequences (up to max_batch): the prompts are read in
        chunks, then every step decodes one token of every unfinished row in one call. Each
        GGUF holds one model (merged): no adapters to switch, `adapters` must name none."""
        if adapters is not None and any(adapters):
            raise ValueError("the llama.cpp engine runs merged models: it has no adapters to switch")
        if len(prompts) > self.max_batch:
            raise ValueError(f"a batch of {len(prompts)} prompts; this engine holds {self.max_batch}")
        with self._lock:
            t0 = time.perf_counter()
            rng = np.random.default_rng(settings.seed)
            self._clear_rows()
            pos = [len(p) for p in prompts]
            # context-aware decoding: row i's plain prompt is sequence max_batch + i. Alone (chat, one
            # stream) it is fed lazily: most steps have one plausible token, which the contrast keeps
            # whatever the plain prompt says, so only a step with several reads the plain logits, and
            # first catches the plain sequence up on the tokens it has not read, in one call (cheaper
            # per token than a step each). With several such rows the plain tokens ride along in each
            # step's call instead: a second call per step would cost a batch more than it saves.
            plain = {i: list(r.contrast) for i, r in enumerate(rows) if r.contrast is not None}
            plain_pos = dict.fromkeys(plain, 0)
            scored = {i for i, r in enumerate(rows) if r.prompt_logprobs is not None}
            for i in scored:
                rows[i].prompt_scores = [None]
            pending: list[tuple[int, TokenLogprob | None] | None] = [None] * len(prompts)
            live = []
            for i, prompt in enumerate(prompts):
                if len(prompt) >= self.context_length:
                    raise SpecialistError(f"a prompt of {len(prompt)} tokens does not fit llama.cpp's context of "
                                          f"{self.context_length} tokens per sequence")
                if rows[i].cancelled.is_set():  # the reader left while the request waited: skip it
                    rows[i].finish_reason = "cancelled"
                    plain.pop(i, None)
                    scored.discard(i)
                    continue
                live.append(i)
            # a scored row wants the logits of every prompt token, so it reads its whole prompt
            sequences = {i: prompts[i] for i in live if i not in scored}
            sequences.update({self.max_batch + i: tokens for i, tokens in plain.items()})
            starts, held = self._reuse_start(sequences)
            entries = []
            for i in live:
                start = starts.get(i, 0)
                rows[i].cached_tokens = min(start, held)
                entries += [(t, k, i, i in scored or k == len(prompts[i]) - 1)
                            for k, t in enumerate(prompts[i]) if k >= start]
            for i in plain:
                plain_pos[i] = starts.get(self.max_batch + i, 0)
            eager = len(plain) > 1
            step: dict[int, np.ndarray] = {}
            ready: dict[int, np.ndarray] = {}  # plain logits at the current position

            def take(entry: tuple[int, int, int, bool], logits: np.ndarray) -> None:
                _, k, i, _ = entry
                if i >= self.max_batch:
                    if k == len(plain[i - self.max_batch]) - 1:
                        ready[i - self.max_batch] = self._kept_copy(logits)
                    return
                if i in scored and k + 1 < len(prompts[i]):  # the prompt's next token, over the whole head
                    rows[i].prompt_scores.append(score(logits, prompts[i][k + 1], rows[i].prompt_logprobs))
                if k == pos[i] - 1:
                    step[i] = self._kept_copy(logits)

            if eager:
                entries += self._plain_entries(plain, plain_pos, list(plain))
            self._feed(entries, min(self.prefill_chunk, SCORED_CHUNK) if scored else self.prefill_chunk, take)
            self._choose({i: lg for i, lg in step.items() if not rows[i].done}, plain, plain_pos, ready, pending,
                         rows, settings, rng)
            while True:
                active = []
                for i, row in enumerate(rows):
                    if pending[i] is None or row.done:
                        continue
                    row.push(*pending[i])
                    if row.done:
                        continue
                    if pos[i] + 1 >= self.context_length:  # the sequence's context is full
                        row.finish("length")
                        continue
                    active.append(i)
                if not active:
                    break
                entries = [(pending[i][0], pos[i], i, True) for i in active]
                for i in active:
                    pos[i] += 1
                    if i in plain:
                        plain[i].append(pending[i][0])
                step.clear()
                ready.clear()
                if len(active) == 1:  # chat, or the last row of a batch: its step also checks drafted tokens
                    self._drafted_step(entries[0], prompts[active[0]], pos, plain, plain_pos, ready, pending, rows,
                                       settings, rng)
                    continue
                if eager:
                    entries += self._plain_entries(plain, plain_pos, [i for i in active if i in plain])
                self._feed(entries, self.prefill_chunk, take)
                self._choose(dict(step), plain, plain_pos, ready, pending, rows, settings, rng)
            seconds = time.perf_counter() - t0
        return finish_rows(rows, seconds)

    def _clear_rows(self) -> None:
        """Empty every sequence but the kept prompt start (metadata only: zeroing the cache costs
        more than a token)."""
        if not self._start:
            self._lib.llama_memory_clear(self._memory, False)
            return
        for seq in range(self._start_seq):
            self._lib.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def _reuse_start(self, sequences: dict[int, list[int]]) -> tuple[dict[int, int], int]:
        """Start sequences (id: tokens) from the prompt start they share, read once: the start
        kept from earlier batches if some begin with it, or the longest start all of them share,
        or that the first shares with the previous batch's first prompt (a lone request: the
        next turn of a chat, the next question under the same system prompt), whichever is
        longest. The start sequence is brought to it (extended, or read again) and copied into
        each sequence that begins with it and goes on past it (its last token must be read for
        its logits). Returns how many tokens each sequence starts with, and how many of them the
        start sequence held before this batch (read for earlier requests: the cached tokens)."""
        if not self.reuses_starts or not sequences:
            return {}, 0
        tokens = list(sequences.values())
        held = len(self._start) if any(len(t) > len(self._start) and t[:len(self._start)] == self._start
                                       for t in tokens) else 0
        shared = common_start(tokens, cap=min(map(len, tokens)) - 1) if len(tokens) > 1 else 0
        previous = common_start([tokens[0], self._last], cap=len(tokens[0]) - 1) if self._last else 0
        self._last = list(tokens[0])
        n = max(held, shared, previous)
        if n < START_MIN:
            return {}, 0
        target = self._start if n == held else tokens[0][:n]
        keep = common_start([self._start, target])
        # a sliding-window layer keeps only its window behind the sequence's end: cut back further,
        # the cells the shorter start needs may have been reused
        if keep < len(self._start) and self.n_swa > 0 and len(self._start) > self.n_swa:
            keep = 0
        if keep < len(self._start):
            self._lib.llama_memory_seq_rm(self._memory, self._start_seq, keep, -1)
        self._start = []  # until it is read: a failed call leaves no start half-read for the next batch
        self._feed([(t, k, self._start_seq, False) for k, t in enumerate(target) if k >= keep], self.prefill_chunk,
                   lambda entry, logits: None)
        self._start = list(target)
        starts = {}
        for seq, t in sequences.items():
            if len(t) > n and t[:n] == target:
                self._lib.llama_memory_seq_cp(self._memory, self._start_seq, seq, -1, -1)
                starts[seq] = n
        return starts, keep

    def _drafted_step(self, entry: tuple[int, int, int, bool], prompt: list[int], pos: list[int],
                      plain: dict[int, list[int]], plain_pos: dict[int, int], ready: dict[int, np.ndarray],
                      pending: list, rows: Sequence[RowDecoder], settings: GenerationSettings,
                      rng: np.random.Generator) -> None:
        """One step of a lone row (prompt lookup decoding, as transformers' prompt_lookup_num_tokens):
        the pending token goes in with the tokens that followed the answer's last few tokens where
        they appeared before (draft), all in one call. Each draft token is then checked against the
        token this row picks at its position, in order, from the logits computed with the drafts
        before it, which are the logits it would have had without drafting as long as every draft
        before it was the picked token; the first that is not, and all after it, leave the cache
        again. The answer is the same as one token per call, greedy or sampled (the same
        random draws in the same order); the gain is the tokens that pass in one call."""
        i = entry[2]
        row = rows[i]
        room = min(self.context_length - 1, self.n_swa if self.n_swa > 0 else self.context_length) - pos[i]
        draft = lookup(prompt + row.tokens, min(DRAFT_TOKENS, room)) if self.drafts else []
        logits: list[np.ndarray] = []
        self._feed([entry, *((t, pos[i] + k, i, True) for k, t in enumerate(draft))], self.prefill_chunk,
                   lambda e, lg: logits.append(self._kept_copy(lg)))
        for k, lg in enumerate(logits):
            ready.clear()
            self._choose({i: lg}, plain, plain_pos, ready, pending, rows, settings, rng)
            if k == len(draft):
                return
            if pending[i][0] != draft[k]:
                if not self._lib.llama_memory_seq_rm(self._memory, i, pos[i], -1):
                    raise SpecialistError(f"llama.cpp could not take drafted tokens out of its cache ({_Log.tail()})")
                return
            row.push(*pending[i])  # the draft token is this step's pick: its logits are the next step's
            pending[i] = None
            if row.done:
                return
            pos[i] += 1
            if i in plain:
                plain[i].append(draft[k])

    def _plain_entries(self, plain: dict[int, list[int]], plain_pos: dict[int, int],
                       which: list[int]) -> list[tuple[int, int, int, bool]]:
        """The entries that bring rows `which`'s plain sequences up to date (logits for the last
        of each), marked as read in `plain_pos`."""
        out = [(t, plain_pos[i] + k, self.max_batch + i, plain_pos[i] + k == len(plain[i]) - 1)
               for i in which for k, t in enumerate(plain[i][plain_pos[i]:])]
        for i in which:
            plain_pos[i] = len(plain[i])
        return out

    def _choose(self, logits: dict[int, np.ndarray], plain: dict[int, list[int]], plain_pos: dict[int, int],
                ready: dict[int, np.ndarray], pending: list, rows: Sequence[RowDecoder],
                settings: GenerationSettings, rng: np.random.Generator) -> None:
        """Pick each row's next token from its logits (over the kept head, copies); `ready`: the
        plain logits already at the current position. Rows whose step needs the contrast and
        whose plain sequence lags behind first catch it up, all in one call."""
        needs = [i for i in logits if i in plain and i not in ready and len(plausible(logits[i])) > 1]
        if needs:
            self._feed(self._plain_entries(plain, plain_pos, needs), self.prefill_chunk,
                       lambda entry, lg: ready.__setitem__(entry[2] - self.max_batch, self._kept_copy(lg)))
        for i, lg in logits.items():
            pending[i] = self._pick(lg, settings, rng, rows[i], ready.get(i))

    def generate(self, conversations: Sequence[Sequence[Message]], settings: GenerationSettings | None = None,
                 batch_size: int = 8) -> list[Answer]:
        return super().generate(conversations, settings, min(batch_size, self.max_batch))

    def close(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:  # not while a batch is decoding
            self._free()

    def _free(self) -> None:
        lib, self._lib = getattr(self, "_lib", None), None
        if lib is None:
            return
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
        if getattr(self, "_ctx", None):
            lib.llama_free(self._ctx)
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def score(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """A token's log-probability under one position's logits, with the `top` most likely."""
    import torch

    from specialist.inference.logprobs import score_positions

    return score_positions(torch.from_numpy(np.asarray(logits, dtype=np.float32))[None], torch.tensor([token]),
                           top)[0]


def lookup(tokens: list[int], limit: int, ngrams: Sequence[int] = DRAFT_NGRAM) -> list[int]:
    """Up to `limit` tokens that followed the first occurrence of `tokens`' last n tokens (n from
    `ngrams`, the first that matches; the first occurrence, as transformers' prompt lookup takes
    it, has the longest continuation when an answer repeats itself); none when nothing matches."""
    if limit <= 0:
        return []
    for n in ngrams:
        if len(tokens) <= n:
            continue
        tail = tokens[-n:]
        for start in range(len(tokens) - n):
            if tokens[start:start + n] == tail:
                return tokens[start + n:start + n + limit]
    return []


def plausible(logits: np.ndarray) -> np.ndarray:
    """The token ids that pass context-aware decoding's plausibility cut (contrast.PLAUSIBLE)."""
    return np.flatnonzero(logits >= logits.max() + np.float32(np.log(PLAUSIBLE)))


def contrasted(logits: np.ndarray, plain: np.ndarray | None, alpha: float) -> np.ndarray:
    """One row's context-aware scores (contrast.contrast) over the tokens that pass the
    plausibility cut; -inf elsewhere. Normalising both over the candidates only shifts the
    row's scores by a constant, as in the torch engine's ContrastRows; a lone candidate scores
    0 whatever the plain prompt's logits (then `plain` may be None)."""
    import torch

    cands = plausible(logits)
    out = np.full(logits.shape, -np.inf, dtype=np.float32)
    if len(cands) == 1:
        out[cands] = 0.0
        return out
    if plain is None:
        raise ValueError("several plausible tokens: the contrast needs the plain prompt's logits")
    mixed = contrast(torch.from_numpy(np.ascontiguousarray(logits[cands]))[None],
                     torch.from_numpy(np.ascontiguousarray(plain[cands]))[None], alpha)[0]
    out[cands] = mixed.numpy()
    return out


def built_with(llama_cpp: Any, feature: str) -> bool:
    """Whether this llama.cpp was built with a CPU feature (its system info's name): AMX_INT8,
    its AMX int8 kernels (the default on AMX CPUs); AVX512_BF16, native bf16 dot products (AMX
    CPUs have them too; elsewhere bf16 weights are converted on every use)."""
    return f"{feature} = 1" in llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def gguf_tokenizer(path: Path) -> Any:
    """The Hugging Face tokenizer of a .gguf file, read from the file itself: the engine needs
    no converted weights (the cached folder is used when an earlier run made it)."""
    from transformers import AutoTokenizer

    from specialist.errors import ModelNotFound
    from specialist.models.convert import READ_GGUF_ERRORS, check_gguf_header, gguf_cache_path
    from specialist.models.resolve import load_tokenizer
    from specialist.models.template import ensure_chat_template

    if gguf_cache_path(path).exists():
        return load_tokenizer(str(path))
    check_gguf_header(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except READ_GGUF_ERRORS as exc:
        raise ModelNotFound(f"{path}: cannot read its tokenizer ({exc})") from exc
    ensure_chat_template(tokenizer)
    return tokenizer
