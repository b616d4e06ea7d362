"""Every eval metric on hand-made cases whose right value is known (no model needed)."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from specialist.data.example import Example
from specialist.errors import ConfigError, SpecialistError
from specialist.evaluate import cost, metrics
from specialist.evaluate.contenders import Contender, Endpoint, pick_shots
from specialist.evaluate.examples import load_eval_examples
from specialist.evaluate.rules import load_rules, score_rules
from specialist.evaluate.style import dispersion, train_style_classifier


# ------------------------------------------------------------------ similarity
def test_chrf_identical_is_100_and_disjoint_is_0():
    refs = ["Cześć! Mamy kawę z Kolumbii.", "Wysyłka trwa 1-2 dni."]
    assert metrics.chrf(refs, refs) == pytest.approx(100.0)
    assert metrics.chrf(["qqqq", "zzzz"], ["abc", "def"]) == pytest.approx(0.0)


def test_chrf_is_between_for_partial_overlap():
    assert 0 < metrics.chrf(["Mamy kawę z Brazylii."], ["Mamy kawę z Kolumbii."]) < 100


def test_rouge_l_known_value():
    # LCS("a b c d e", "a c e x") = 3: precision 3/4, recall 3/5, F1 = 2/3
    assert metrics.rouge_l(["a c e x"], ["a b c d e"]) == pytest.approx(2 / 3)
    assert metrics.rouge_l(["a b", "x y"], ["a b", "a b"]) == pytest.approx(0.5)  # mean of 1 and 0


def test_rouge_l_keeps_non_ascii_words():
    # rouge-score's default tokenizer reduces both to "m ka" and calls them identical
    assert metrics.rouge_l(["mąka"], ["męka"]) == 0.0
    assert metrics.rouge_l(["Cześć, świetna kawa"], ["cześć świetna kawa"]) == pytest.approx(1.0)


def test_macro_f1_accuracy_exact_match_on_a_small_confusion():
    refs = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "b", "C"]
    s = metrics.classification_scores(preds, refs)
    # per class F1: a = 2·1·0.5/1.5 = 2/3, b = 2·(2/3)·1/(5/3) = 0.8, c = 1 (case-insensitive)
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 1) / 3)
    assert s["accuracy"] == pytest.approx(4 / 5)
    assert s["exact_match"] == pytest.approx(3 / 5)  # "C" is not verbatim "c"


def test_macro_f1_averages_over_reference_labels_only():
    # a junk answer is a miss for its class, not a class of its own
    s = metrics.classification_scores(["a", "junk"], ["a", "b"])
    assert s["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)


def test_classification_detected_only_for_repeating_short_labels():
    assert metrics.is_classification(["positive", "negative", "positive", "neutral", "negative", "positive"])
    assert not metrics.is_classification(["Cześć! Mamy kawę z Kolumbii, przetwarzaną metodą Swiss Water.", "Tak."])
    assert not metrics.is_classification(["a", "b", "c", "d"])  # nothing repeats: not a label set
    assert "macro_f1" in metrics.similarity_scores(["x", "y", "x", "y"], ["x", "y", "x", "x"])
    assert "macro_f1" not in metrics.similarity_scores(["a long free answer here"] * 2,
                                                       ["another long free answer"] * 2)


# ------------------------------------------------------------------ rules
def _rules(tmp_path, text):
    p = tmp_path / "eval.yaml"
    p.write_text(text, encoding="utf-8")
    return load_rules(p)


def test_rule_pass_rates(tmp_path):
    rules = _rules(tmp_path, """rules:
  - name: greeting
    pattern: "^(cześć|jasne)"
  - name: asks back
    pattern: "\\\\?$"
  - name: brief
    max_words: 5
  - name: not too short
    min_words: 2
  - name: no English
    not_pattern: "\\\\bthe\\\\b"
""")
    answers = ["Cześć! Co podać?", "JASNE, wysyłamy jutro.", "The coffee is great and the shipping is fast"]
    r = score_rules(rules, answers)
    assert r.per_rule == {"greeting": pytest.approx(2 / 3), "asks back": pytest.approx(1 / 3),
                          "brief": pytest.approx(2 / 3), "not too short": 1.0, "no English": pytest.approx(2 / 3)}
    # passes: answer 1: 5/5, answer 2: 4/5 (no question), answer 3: 1/5 (only min_words)
    assert r.pass_rate == pytest.approx(10 / 15)
    assert r.all_pass_rate == pytest.approx(1 / 3)
    assert r.passed[1] == [True, False, True, True, True]


def test_language_rule(tmp_path):
    rules = _rules(tmp_path, "rules:\n  - name: Polish\n    language: pl\n")
    r = score_rules(rules, ["Cześć! Mamy świeżo paloną kawę z Etiopii, chcesz spróbować?",
                            "Hello! We have freshly roasted coffee from Ethiopia, want to try?", ""])
    assert r.passed == [[True], [False], [False]]


@pytest.mark.parametrize(("text", "expected"), [
    ("rules:\n  - name: a\n    pattern: \"(x\"\n", r"eval.yaml:3: rules\[0\].pattern: invalid regular expression"),
    ("rules:\n  - name: a\n    max_words: 3\n  - name: b\n    max_words: 2\n    min_words: 1\n",
     r"eval.yaml:4: rules\[1\]: needs exactly one of"),
    ("rules:\n  - name: a\n    language: klingon\n", r"eval.yaml:3: rules\[0\].language: unknown language"),
    ("rules:\n  - name: a\n    colour: red\n", r"eval.yaml:3: rules\[0\].colour"),
    ("other: 1\n", r"eval.yaml: expected a top-level `rules:` list"),
    ("rules: [\n", r"eval.yaml:2: not valid YAML"),
])
def test_bad_rules_are_located(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        _rules(tmp_path, text)


# ------------------------------------------------------------------ style and spread
def test_dispersion_known_values():
    d = dispersion([1, 2, 3, 4])
    assert d["mean"] == 2.5
    assert d["std"] == pytest.approx(math.sqrt(1.25))  # population std
    assert d["iqr"] == pytest.approx(3.25 - 1.75)
    assert dispersion([7, 7, 7])["std"] == 0.0 and dispersion([7, 7, 7])["iqr"] == 0.0


def test_style_classifier_separates_styles_and_reports_heldout_accuracy():
    target = [f"Cześć! Mamy kawę numer {i} dla Ciebie. Chcesz spróbować?" for i in range(12)]
    generic = [f"The answer to question {i} is as follows: see the documentation." for i in range(12)]
    clf = train_style_classifier(target, generic, seed=0)
    assert clf.heldout_accuracy == pytest.approx(1.0)
    assert clf.folds == 5
    assert clf.adherence(["Cześć! Mamy kawę z Kenii dla Ciebie. Chcesz spróbować?"]) == 1.0
    assert clf.adherence(["The answer is as follows: see the manual."]) == 0.0
    scores = clf.scores(["Cześć! Mamy kawę. Chcesz?", "The answer is in the documentation."])
    assert scores[0] > 0.5 > scores[1]


def test_style_classifier_needs_both_classes():
    with pytest.raises(ValueError):
        train_style_classifier(["a", "b"], ["a", "b"])  # generic texts equal to targets are dropped


# ------------------------------------------------------------------ cost
def test_break_even_arithmetic():
    # 120 s of training; 230 prompt tokens saved per request at 1 ms each → 0.23 s/request → 522 requests
    assert cost.break_even_requests(120.0, 230.0, 0.001) == math.ceil(120 / 0.23) == 522
    assert cost.break_even_requests(100.0, 100.0, 0.01) == 100  # exact: no rounding up past it
    assert cost.break_even_requests(120.0, 0.0, 0.001) is None
    assert cost.break_even_requests(120.0, -5.0, 0.001) is None


def test_break_even_by_price():
    # 1 h at $2/h = $2; 1000 tokens saved × $1 per million = $0.001 per request → 2000 requests
    be = cost.break_even_by_price(3600.0, 2.0, 1000.0, 1.0)
    assert (be.requests, be.unit, be.training_cost) == (2000, "USD", pytest.approx(2.0))
    assert "$1 per million" in be.assumptions


def test_break_even_by_time_states_assumptions():
    be = cost.break_even_by_time(60.0, 100.0, 0.002)
    assert be.requests == 300 and be.unit == "seconds"
    assert "prefill" in be.assumptions and "60 s" in be.assumptions


def test_usage_stats():
    u = cost.usage_stats([10, 20, 30, 40], [5, 5, 10, 20], [0.1, 0.2, 0.3, 1.0])
    assert u["prompt_tokens_mean"] == 25.0
    assert u["completion_tokens_mean"] == 10.0
    assert u["latency_ms_p50"] == pytest.approx(250.0)
    assert u["latency_ms_p95"] == pytest.approx((0.3 + 0.85 * 0.7) * 1000)  # linear interpolation
    assert u["throughput_tokens_per_s"] == pytest.approx(40 / 1.6)


# ------------------------------------------------------------------ contenders and data
TRAIN = [Example.from_prompt(f"pytanie {i}?", f"odpowiedź {i}.") for i in range(10)]


def test_few_shot_draw_is_seeded_and_skips_eval_prompts():
    a = pick_shots(TRAIN, 3, seed=7, exclude=[TRAIN[0], TRAIN[1]])
    assert a == pick_shots(TRAIN, 3, seed=7, exclude=[TRAIN[0], TRAIN[1]])
    assert a != pick_shots(TRAIN, 3, seed=8, exclude=[TRAIN[0], TRAIN[1]])
    assert not {p.prompt for p in a} & {"pytanie 0?", "pytanie 1?"}
    assert pick_shots(TRAIN, 0, seed=1) == []
    with pytest.raises(SpecialistError, match="only 10"):
        pick_shots(TRAIN, 11, seed=1)


def test_contender_messages():
    pe = Contender("prompt-engineering", "base", "Bądź miły.", TRAIN[:2])
    msgs = pe.messages(Example.from_prompt("Co polecasz?", "x"))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"] == "Bądź miły." and msgs[2]["content"] == "odpowiedź 0."
    assert msgs[-1]["content"] == "Co polecasz?"
    assert Contender("zero-shot", "base").messages(Example.from_prompt("Co polecasz?", "x")) == [
        {"role": "user", "content": "Co polecasz?"}]


def test_load_eval_examples_formats_and_located_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n\n" + json.dumps(
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "r"}]}) + "\n", encoding="utf-8")
    examples = load_eval_examples(p)
    assert [(x.prompt, x.completion, x.system) for x in examples] == [("a", "b", None), ("q", "r", "s")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(SpecialistError, match=r"bad.jsonl:2"):
        load_eval_examples(bad)


def _fake_openai(seen: list) -> httpx.Client:
    """An OpenAI-compatible chat endpoint answering with the last user message reversed."""
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        text = body["messages"][-1]["content"][::-1]
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})
    return httpx.Client(transport=httpx.MockTransport(handle))


def test_endpoint_contender_uses_the_openai_protocol():
    seen: list = []
    ep = Endpoint("http://fake/v1", "big-model", name="big", http_client=_fake_openai(seen))
    replies = ep.answer([[{"role": "user", "content": "abc"}]], max_new_tokens=7, seed=1, count_tokens=None)
    assert replies[0].text == "cba" and replies[0].prompt_tokens == 11 and replies[0].completion_tokens == 3
    assert seen[0]["model"] == "big-model" and seen[0]["max_tokens"] == 7 and seen[0]["temperature"] == 0


def test_endpoint_errors_are_one_line():
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500, json={"error": "boom"})))
    ep = Endpoint("http://fake/v1", "m", http_client=client)
    with pytest.raises(SpecialistError, match="endpoint m"):
        ep.answer([[{"role": "user", "content": "x"}]], 5, 0, None)
