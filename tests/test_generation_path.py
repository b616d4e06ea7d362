"""The generation path per CPU (models.device.generation_path) and the int8 path's answers
against fp32 on a tiny model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from specialist.models.device import CPU_FEATURES, generation_path, parse_cpu_features

# flags lines as /proc/cpuinfo has them (abridged)
SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
EPYC_ZEN4 = "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16\n"
EPYC_ZEN2 = "flags\t\t: fpu sse2 avx avx2 fma\n"
OLD_X86 = "flags\t\t: fpu sse2 sse4_2 avx\n"
ARM = "Features\t: fp asimd evtstrm aes crc32\n"


def test_cpuinfo_flags_name_the_features():
    assert parse_cpu_features(SAPPHIRE_RAPIDS) == {"amx", "avx512_bf16", "avx512", "avx2", "vnni"}
    assert parse_cpu_features(EPYC_ZEN4) == {"avx512_bf16", "avx512", "avx2", "vnni"}
    assert parse_cpu_features(EPYC_ZEN2) == {"avx2"}
    assert parse_cpu_features(OLD_X86) == set()
    assert parse_cpu_features(ARM) == set()
    # a flag's name inside another line is not a flag
    assert parse_cpu_features("model name\t: avx2 machine\nflags\t: fpu\n") == set()


@pytest.mark.parametrize(
    ("cpuinfo", "int8_kernels", "int8_default", "expected"),
    [
        (SAPPHIRE_RAPIDS, True, True, "bf16"),  # AMX: bf16 on the matrix units
        (EPYC_ZEN4, True, False, "fp32"),  # avx512_bf16 without AMX: bf16 failed eval parity on facts
        (EPYC_ZEN4, True, True, "int8"),  # int8 once its eval parity is measured
        (EPYC_ZEN4, False, True, "fp32"),  # no quantized engine in this torch
        (EPYC_ZEN2, True, True, "int8"),  # AVX2 only
        (EPYC_ZEN2, True, False, "fp32"),
        (OLD_X86, True, True, "fp32"),  # no AVX2: no fast int8 kernels
    ],
)
def test_the_path_per_cpu(cpuinfo, int8_kernels, int8_default, expected):
    path = generation_path(parse_cpu_features(cpuinfo), "cpu", "auto", int8_kernels, int8_default)
    assert path.name == expected
    assert path.int8 == (expected == "int8")
    assert path.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32, "int8": torch.float32}[expected]
    assert path.reason


@given(st.frozensets(st.sampled_from(CPU_FEATURES)), st.booleans())
def test_a_path_asked_for_is_the_path_taken_and_auto_never_quantizes_off_the_cpu(features, int8_kernels):
    assert generation_path(features, "cpu", "fp32", int8_kernels).dtype == torch.float32
    assert generation_path(features, "cpu", "bf16", int8_kernels).dtype == torch.bfloat16
    if int8_kernels:
        assert generation_path(features, "cpu", "int8", True).int8
    else:
        with pytest.raises(ValueError):
            generation_path(features, "cpu", "int8", False)
    assert not generation_path(features, "cuda", "auto", int8_kernels).int8
    auto = generation_path(features, "cpu", "auto", int8_kernels)
    assert auto.name == "bf16" if "amx" in features else auto.name in ("int8", "fp32")
    assert not auto.int8 or int8_kernels


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown dtype"):
        generation_path(frozenset(), "cpu", "int4")


# ------------------------------------------------------------------ int8 against fp32
PROMPTS = [
    "Hello, how are you?",
    "Tell me about coffee.",
    "What is the price of the beans?",
    "Where is the shop?",
    "Can I pay by card?",
    "Do you ship abroad?",
]


def test_int8_weights_answer_like_fp32_on_a_tiny_model(lively_chat_model):
    """Tolerance, on a random model (harder on int8 than a trained one: its logits are near
    ties): logits within 10% (relative L2) of fp32's; the same next token wherever fp32's best
    token leads the runner-up by 0.1 or more (int8 only flips near-ties; measured: 7% relative
    error, largest flipped lead 0.045), and at >= 80% of all positions (measured 87%); >= 60% of
    the greedy answer tokens equal (measured 77%; greedy decoding drifts after the first
    different token)."""
    from specialist.inference.precision import int8_available, load_for_generation
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.device import generation_path
    from specialist.models.template import build_messages

    if not int8_available():
        pytest.skip("this torch has no quantized int8 Linear engine")
    fp32 = load_for_generation(str(lively_chat_model), generation_path(frozenset(), "cpu", "fp32"))
    int8 = load_for_generation(str(lively_chat_model), generation_path(frozenset(), "cpu", "int8"))
    linears = [m for m in int8.model.modules() if type(m).__name__ == "Linear" and m.__module__.startswith("torch.nn")]
    assert not linears, "every Linear layer has int8 weights"
    assert type(int8.model.get_output_embeddings()).__name__ == "Linear"  # the quantized head

    gen_fp32, gen_int8 = TorchGenerator(fp32), TorchGenerator(int8)
    ids = [gen_fp32.prompt_ids(build_messages(p)) for p in PROMPTS]
    batch = gen_fp32.batch_inputs(ids)
    with torch.inference_mode():
        a = fp32.model(**batch).logits[batch["attention_mask"].bool()]
        b = int8.model(**batch).logits[batch["attention_mask"].bool()]
    assert ((b - a).norm() / a.norm()).item() < 0.10
    same_top = a.argmax(-1) == b.argmax(-1)
    best, runner_up = a.topk(2, dim=-1).values.unbind(-1)
    clear = best - runner_up >= 0.1
    assert clear.sum() >= len(clear) // 4 and same_top[clear].all()
    assert same_top.float().mean().item() >= 0.80

    settings = GenerationSettings(max_new_tokens=16)
    messages = [build_messages(p) for p in PROMPTS]
    tok = fp32.tokenizer
    same = total = 0
    for x, y in zip(gen_fp32.generate(messages, settings), gen_int8.generate(messages, settings)):
        tx, ty = tok(x.text)["input_ids"], tok(y.text)["input_ids"]
        same += sum(p == q for p, q in zip(tx, ty))
        total += max(len(tx), len(ty), 1)
    assert same / total >= 0.60


def test_the_torch_engine_says_which_path_it_took(lively_chat_model, run_cli):
    from specialist.inference.precision import choose_path

    proc = run_cli("generate", "--model", lively_chat_model, "--prompt", "Hello", "--max-new-tokens", "4")
    assert proc.exit_code == 0, proc.stderr
    assert f"generation path: {choose_path().name} (" in proc.stderr
    proc = run_cli(
        "generate", "--model", lively_chat_model, "--prompt", "Hello", "--max-new-tokens", "4", "--dtype", "fp32"
    )
    assert proc.exit_code == 0, proc.stderr
    assert "generation path: fp32 (asked for" in proc.stderr
    proc = run_cli("generate", "--model", lively_chat_model, "--prompt", "Hello", "--dtype", "int4")
    assert proc.exit_code == 2 and "--dtype" in proc.stderr


def test_bench_names_the_cpu_its_features_and_the_path(tmp_path, monkeypatch, run_cli):
    import json

    from specialist.inference import precision
    from specialist.models import device

    zen4 = parse_cpu_features(EPYC_ZEN4)
    monkeypatch.setattr(device, "cpu_features", lambda: zen4)
    monkeypatch.setattr(precision, "cpu_features", lambda: zen4)
    monkeypatch.setattr(precision, "int8_available", lambda: True)
    monkeypatch.setattr(device, "cpu_name", lambda: "AMD EPYC 9R14")
    (tmp_path / "bench_fake.py").write_text('def bench(quick=False):\n    return {"rows": [], "ok": True}\n')
    env = {"SPECIALIST_BENCHMARKS": str(tmp_path)}

    doc = json.loads(run_cli("bench", "--json", env=env).stdout)
    assert doc["machine"]["cpu"] == "AMD EPYC 9R14"
    assert doc["machine"]["cpu_features"] == {
        "amx": False,
        "avx512_bf16": True,
        "avx512": True,
        "avx2": True,
        "vnni": True,
    }
    assert doc["machine"]["generation_path"]["path"] == device.generation_path(zen4).name
    assert doc["benchmarks"][0]["name"] == "fake"

    text = " ".join(run_cli("bench", env=env).stdout.split())
    assert "AMD EPYC 9R14" in text and "avx512_bf16, avx512, avx2, vnni (no amx)" in text
    assert f"generation path: {device.generation_path(zen4).name} (" in text


def test_path_parity_holds_each_eval_metric_within_two_points():
    from tests.test_benchmarks import load

    quality = load("bench_engine_quality")

    def report(adherence, rules, chrf, facts, answers):
        metrics = {"style_adherence": adherence, "rule_pass_rate": rules, "chrf": chrf, "fact_accuracy": facts}
        return {"contenders": [{"name": "fine-tuned", "metrics": metrics, "answers": [{"answer": a} for a in answers]}]}

    reference = report(0.90, 0.80, 30.0, 0.10, ["a", "b"])
    [close] = quality.parity(reference, report(0.915, 0.79, 28.5, 0.11, ["a", "c"]))
    assert close["parity"] and close["style_adherence_delta"] == 1.5 and close["chrf_delta"] == -1.5
    assert close["identical_answers"] == "1/2"
    [drifted] = quality.parity(reference, report(0.90, 0.80, 30.0, 0.13, ["a", "b"]))  # 3 points of facts
    assert not drifted["parity"] and drifted["fact_accuracy_delta"] == 3.0
    [no_facts] = quality.parity(reference, report(0.90, 0.80, 30.0, None, ["a", "b"]))
    assert no_facts["parity"] and no_facts["fact_accuracy"] is None


@pytest.mark.parametrize(
    ("cpuinfo", "cap", "expected"),
    [
        (SAPPHIRE_RAPIDS, None, {"amx", "avx512_bf16", "avx512", "avx2", "vnni"}),
        (SAPPHIRE_RAPIDS, "ALL", {"amx", "avx512_bf16", "avx512", "avx2", "vnni"}),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", {"amx", "avx512_bf16", "avx512", "avx2", "vnni"}),
        (SAPPHIRE_RAPIDS, "avx512_core_bf16", {"avx512_bf16", "avx512", "avx2", "vnni"}),  # oneDNN ignores case
        (EPYC_ZEN4, "AVX512_CORE", {"avx512", "avx2"}),
        (EPYC_ZEN4, "AVX2", {"avx2"}),
        (EPYC_ZEN4, "AVX", set()),
        (EPYC_ZEN2, "AVX512_CORE_BF16", {"avx2"}),  # a cap adds nothing the CPU lacks
        (EPYC_ZEN4, "NOT_AN_ISA", {"avx512_bf16", "avx512", "avx2", "vnni"}),  # unknown: no cap
    ],
)
def test_onednn_isa_cap_removes_what_torch_matmuls_cannot_use(cpuinfo, cap, expected):
    from specialist.models.device import usable_features

    assert usable_features(parse_cpu_features(cpuinfo), cap) == expected


def test_an_avx2_cap_makes_a_bf16_cpu_choose_fp32(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 on a CPU with native bf16: bf16 would be emulated, so training
    and generation choose fp32 as on an AVX2-only CPU."""
    from specialist.models import device

    monkeypatch.setattr(device, "parse_cpu_features", lambda text: parse_cpu_features(SAPPHIRE_RAPIDS))
    device.cpu_features.cache_clear()
    try:
        assert device.cpu_supports_bf16()
        device.cpu_features.cache_clear()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        assert device.cpu_features() == {"avx2"}
        assert not device.cpu_supports_bf16()
        assert generation_path(device.cpu_features(), "cpu", "auto", True).name == "fp32"
    finally:
        device.cpu_features.cache_clear()
