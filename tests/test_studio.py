"""The studio's routes with FastAPI's TestClient: pages, the API key, data findings and edits,
the training form and lock, live metrics, the proof page's filters, streamed chat, jobs that
survive a restart. Real child processes run only where a test says so (one tiny training)."""

from __future__ import annotations

import fcntl
import io
import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from specialist.studio.app import create_app
from specialist.studio.state import StudioSettings

HTML = {"Accept": "text/html"}
ROWS = [{"prompt": f"Pytanie numer {i} o kawę?", "completion": f"Odpowiedź {i}: mamy świeżą kawę z Kolumbii."}
        for i in range(10)]
BROKEN_LINE = 4
BROKEN = '{"prompt": "Zepsuty rekord", "completion": "bez cudzysłowu}'


def _dataset(path: Path) -> Path:
    lines = [json.dumps(r, ensure_ascii=False) for r in ROWS]
    lines[BROKEN_LINE - 1] = BROKEN
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _clean_dataset(path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def client(runs) -> TestClient:
    return TestClient(create_app(StudioSettings(runs=runs)))


# ---------------------------------------------------------------- pages and assets
@pytest.mark.parametrize("page", ["/data", "/train", "/proof", "/chat", "/export"])
def test_every_page_renders_with_local_assets_only(client, page):
    r = client.get(page, headers=HTML)
    assert r.status_code == 200
    assert 'aria-current="page"' in r.text
    sources = re.findall(r'(?:src|href)="([^"#]+)"', r.text)
    assert sources and not [s for s in sources if s.startswith(("http:", "https:", "//"))]
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
        assert client.get(asset).status_code == 200, asset


def test_every_input_has_a_label(client):
    for page in ("/data", "/train", "/chat"):
        text = client.get(page, headers=HTML).text
        ids = re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|submit)")[^>]*\bid="([^"]+)"', text)
        labelled = set(re.findall(r'<label[^>]*for="([^"]+)"', text))
        assert ids and set(ids) <= labelled, (page, set(ids) - labelled)


def test_api_key_protects_every_route(runs):
    client = TestClient(create_app(StudioSettings(runs=runs, api_key="sekret")))
    assert client.get("/data").status_code == 401
    assert client.get("/static/htmx.min.js").status_code == 401
    assert client.post("/chat/stream", json={"model": "x", "prompt": "y"}).status_code == 401
    r = client.get("/train", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get("/data", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/data", headers={"Authorization": "Bearer sekret"}).status_code == 200
    r = client.post("/login", data={"key": "wrong", "next": "/data"}, follow_redirects=False)
    assert "wrong=1" in r.headers["location"]
    r = client.post("/login", data={"key": "sekret", "next": "/train"}, follow_redirects=False)
    assert r.headers["location"] == "/train"
    assert client.get("/train").status_code == 200  # the cookie now


# ---------------------------------------------------------------- data
def test_upload_locates_the_error_and_an_edit_fixes_it_in_a_copy(client, runs, tmp_path):
    original = _dataset(tmp_path / "coffee.jsonl")
    r = client.post("/data/upload", files={"dataset": ("coffee.jsonl", original.read_bytes())}, follow_redirects=False)
    uploaded = runs / "data" / "coffee.jsonl"
    assert r.status_code == 303 and uploaded.read_bytes() == original.read_bytes()
    page = client.get("/data", params={"file": str(uploaded)}, headers=HTML).text
    assert 'id="error-count">1<' in page
    assert f'href="#rec-{BROKEN_LINE}"' in page and f'id="rec-{BROKEN_LINE}"' in page
    assert "E001" in page
    fixed = {"prompt": "Naprawiony rekord", "completion": "Teraz wszystko gra."}
    r = client.post("/data/record", data={"file": str(uploaded), "line": BROKEN_LINE, "text": json.dumps(fixed),
                                          "action": "save"}, follow_redirects=False)
    edited = runs / "data" / "coffee.edited.jsonl"
    assert r.status_code == 303 and "coffee.edited.jsonl" in r.headers["location"]
    assert uploaded.read_bytes() == original.read_bytes()  # the original is never modified
    lines = edited.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[BROKEN_LINE - 1]) == fixed and len(lines) == len(ROWS)
    assert [json.loads(x) for i, x in enumerate(lines) if i != BROKEN_LINE - 1] == \
        [r for i, r in enumerate(ROWS) if i != BROKEN_LINE - 1]
    page = client.get("/data", params={"file": str(edited)}, headers=HTML).text
    assert 'id="error-count">0<' in page and 'id="ready"' in page
    # a second edit changes the copy itself; dropping a record keeps every other line number
    client.post("/data/record", data={"file": str(edited), "line": 2, "action": "delete"})
    lines = edited.read_text(encoding="utf-8").splitlines()
    assert lines[1] == "" and len(lines) == len(ROWS) and not (runs / "data" / "coffee.edited-2.jsonl").exists()


def test_a_bad_path_is_one_line_not_a_traceback(client, tmp_path):
    r = client.get("/data", params={"file": str(tmp_path / "missing.jsonl")}, headers=HTML)
    assert "no such file" in r.text and "Traceback" not in r.text
    r = client.post("/data/open", data={"path": str(tmp_path / "missing.jsonl")}, headers={"HX-Request": "true"})
    assert r.headers["HX-Retarget"] == "#errors" and r.text.count("error:") == 1


def test_histograms_split_and_convert(client, runs, tmp_path):
    data = tmp_path / "ok.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    page = client.get("/data", params={"file": str(data)}, headers=HTML).text
    assert page.count('aria-label="histogram of') == 2
    assert sum(int(n) for n in re.findall(r"<title>[^<]*: (\d+)</title>", page)) == 2 * len(ROWS)
    r = client.post("/data/split", data={"file": str(data), "eval_fraction": 0.2, "seed": 0})
    split = runs / "data" / "ok-split"
    assert r.status_code == 200 and (split / "train.jsonl").exists() and (split / "eval.jsonl").exists()
    r = client.post("/data/convert", data={"file": str(data), "to": "chat"})
    out = runs / "data" / "ok.chat.jsonl"
    assert r.status_code == 200 and "messages" in json.loads(out.read_text(encoding="utf-8").splitlines()[0])


# ---------------------------------------------------------------- train
def test_the_form_has_every_setting_with_its_default():
    from specialist.config import TrainConfig
    from specialist.studio.forms import train_fields

    fields = {f.name: f for f in train_fields()}
    assert set(fields) == set(TrainConfig.model_fields) - {"out"}
    assert fields["method"].kind == "select" and "dora" in fields["method"].choices
    assert fields["epochs"].default == TrainConfig.model_fields["epochs"].default
    assert fields["padding_free"].kind == "checkbox" and fields["data"].required


def test_form_values_go_through_the_cli_validation(tmp_path):
    from specialist.errors import ConfigError
    from specialist.studio.forms import parse_train_form

    data = _dataset(tmp_path / "d.jsonl")
    config = parse_train_form({"data": str(data), "max_steps": "7", "lora_r": "", "target_modules": "q_proj, v_proj",
                               "padding_free__present": "1"}, tmp_path / "run")
    assert config.max_steps == 7 and config.lora_r == 16 and config.target_modules == ["q_proj", "v_proj"]
    assert config.padding_free is False  # an unticked checkbox
    with pytest.raises(ConfigError, match="lora_r"):
        parse_train_form({"data": str(data), "lora_r": "-1"}, tmp_path / "run")


def test_a_second_training_of_a_run_folder_is_refused(client, runs, tmp_path):
    studio = client.app.state.studio
    data = _dataset(tmp_path / "d.jsonl")
    with open(studio.jobs._lock_path(studio.train_key("busy")), "a") as held:  # as a running child holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = client.post("/train", data={"data": str(data), "run_name": "busy"}, headers={"HX-Request": "true"})
        assert "already running in this run folder" in r.text
        assert not studio.jobs.all()
        assert studio.jobs.is_locked(studio.train_key("busy"))
    assert not studio.jobs.is_locked(studio.train_key("busy"))
    r = client.post("/train", data={"data": str(data), "run_name": "../escape"}, headers=HTML)
    assert "a run name is letters" in r.text
    r = client.post("/train", data={"data": str(data), "run_name": "x", "lr": "5"}, headers=HTML)
    assert "lr" in r.text and "error:" in r.text and not (runs / "x").exists()


def test_live_metrics_and_status_come_from_the_run_folder(client, runs):
    run = runs / "r"
    run.mkdir(parents=True)
    records = [{"step": s, "max_steps": 4, "loss": 2.0 / s, "train_seconds": float(s), "tokens_per_second": 100.0}
               for s in (1, 2, 3)] + [{"step": 4, "max_steps": 4, "eval_loss": 0.9, "train_seconds": 4.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "run.json").write_text(json.dumps({"status": "completed", "method": "lora", "steps": 4}))
    events = _events(client.get("/train/r/events").text)
    assert [e["step"] for kind, e in events if kind == "metric"] == [1, 2, 3, 4]
    kind, last = events[-1]
    assert kind == "end" and last["status"] == "completed" and last["eval_loss"] == 0.9 and last["percent"] == 100
    # run.json says running but nothing holds the run: a restarted studio says it stopped
    (run / "run.json").write_text(json.dumps({"status": "running"}))
    assert client.app.state.studio.run("r").status == "stopped"
    page = client.get("/train", headers=HTML).text
    assert 'href="/train/r"' in page and "stopped" in page


def test_eta_from_the_records():
    from specialist.studio.runs import progress

    p = progress([{"step": 10, "max_steps": 40, "train_seconds": 20.0, "loss": 1.5}])
    assert p["eta_seconds"] == 60 and p["percent"] == 25 and p["loss"] == 1.5


def test_training_runs_as_the_cli_holds_its_lock_and_streams_its_loss(client, runs, tmp_path, tiny_chat_model):
    studio = client.app.state.studio
    data = _dataset(tmp_path / "d.jsonl")
    fixed = data.read_text(encoding="utf-8").replace(BROKEN, json.dumps(ROWS[0]))
    data.write_text(fixed, encoding="utf-8")
    form = {"data": str(data), "model": str(tiny_chat_model), "run_name": "tiny", "max_steps": "6",
            "logging_steps": "1", "batch_size": "4", "save_steps": "3"}
    r = client.post("/train", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/train/tiny"
    assert studio.jobs.is_locked(studio.train_key("tiny"))
    assert "already running" in client.post("/train", data={**form, "overwrite": "on"}, headers=HTML).text
    events = _events(client.get("/train/tiny/events").text)  # streams until the run ends
    losses = [e["loss"] for kind, e in events if kind == "metric" and "loss" in e]
    kind, last = events[-1]
    assert kind == "end" and last["status"] == "completed", studio.jobs.log(studio.jobs.latest("train", "tiny"))
    assert len(losses) == 6 and last["step"] == last["max_steps"] == 6
    assert not studio.jobs.is_locked(studio.train_key("tiny"))
    job = studio.jobs.latest("train", "tiny")
    assert job.status == "done" and job.argv[:2] == ["train", "--config"]
    # a restarted studio reads the same truth
    again = TestClient(create_app(StudioSettings(runs=runs)))
    assert again.app.state.studio.run("tiny").status == "completed"
    assert again.app.state.studio.jobs.latest("train", "tiny").status == "done"
    r = client.post("/train", data=form, headers=HTML)
    assert "a run folder already exists there" in r.text


def test_stop_interrupts_the_run_and_resume_continues_it(client, runs, tmp_path, tiny_chat_model):
    studio = client.app.state.studio
    data = _clean_dataset(tmp_path / "d.jsonl")
    form = {"data": str(data), "model": str(tiny_chat_model), "run_name": "long", "max_steps": "5000",
            "logging_steps": "1", "batch_size": "2", "save_steps": "2"}
    assert client.post("/train", data=form, follow_redirects=False).status_code == 303
    _wait(lambda: (runs / "long" / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists())
    assert 'id="stop"' in client.get("/train/long", headers=HTML).text
    assert client.post("/train/long/stop", follow_redirects=False).status_code == 303
    _wait(lambda: not studio.jobs.latest("train", "long").running)
    assert studio.jobs.latest("train", "long").status == "cancelled"
    assert json.loads((runs / "long" / "run.json").read_text())["status"] == "interrupted"
    page = client.get("/train/long", headers=HTML).text
    assert 'id="resume"' in page and "interrupted at step" in page
    assert client.post("/train/long/resume", follow_redirects=False).status_code == 303
    _wait(lambda: json.loads((runs / "long" / "run.json").read_text()).get("resumed_from") is not None)
    assert studio.jobs.is_locked(studio.train_key("long"))
    client.post("/train/long/stop")
    _wait(lambda: not studio.jobs.is_locked(studio.train_key("long")))
    assert len(studio.jobs.all("train", "long")) == 2


def test_stop_works_when_the_studio_ignores_ctrl_c(client, runs, tmp_path, tiny_chat_model):
    """A studio started in the background by a shell ignores SIGINT; its trainings must not
    inherit that, or Stop waits for the SIGKILL and run.json never says interrupted."""
    import signal

    studio = client.app.state.studio
    data = _clean_dataset(tmp_path / "d.jsonl")
    form = {"data": str(data), "model": str(tiny_chat_model), "run_name": "bg", "max_steps": "5000",
            "logging_steps": "1", "batch_size": "2", "threads": "1"}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `sh -c 'specialist studio &'` leaves it
    try:
        assert client.post("/train", data=form, follow_redirects=False).status_code == 303
        _wait(lambda: (runs / "bg" / "metrics.jsonl").exists() and (runs / "bg" / "metrics.jsonl").stat().st_size)
        assert client.post("/train/bg/stop", follow_redirects=False).status_code == 303
        _wait(lambda: not studio.jobs.latest("train", "bg").running, 20)  # the SIGKILL would come after 30 s
    finally:
        signal.signal(signal.SIGINT, previous)
    job = studio.jobs.latest("train", "bg")
    assert job.status == "cancelled" and job.returncode == 130, studio.jobs.log(job)
    assert json.loads((runs / "bg" / "run.json").read_text())["status"] == "interrupted"


def test_a_training_that_cannot_start_shows_the_cli_error(client, runs, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROWS[0], ensure_ascii=False) + "\n", encoding="utf-8")
    form = {"data": str(data), "model": "no-such-model-anywhere", "run_name": "bad"}
    assert client.post("/train", data=form, follow_redirects=False).status_code == 303
    events = _events(client.get("/train/bad/events").text)
    kind, last = events[-1]
    assert kind == "end" and last["status"] == "failed" and "no-such-model-anywhere" in last["error"]
    page = client.get("/train/bad", headers=HTML).text
    assert re.search(r'class="badge failed" id="run-status"', page)
    assert "error: unknown model reference &#39;no-such-model-anywhere&#39;" in page and "Traceback" not in page


def test_runs_started_in_a_terminal_show_their_true_status(client, runs, tmp_path, tiny_chat_model, run_cli):
    """A run the CLI trains (no studio lock) is running while its process lives, completed when
    done, and stopped when killed: run.json's status and pid, not the studio's jobs."""
    import os
    import signal
    import subprocess
    import sys

    studio = client.app.state.studio
    data = _clean_dataset(tmp_path / "d.jsonl")
    args = ["train", "--data", str(data), "--model", str(tiny_chat_model), "--batch-size", "2"]
    assert run_cli(*args, "--out", runs / "done", "--max-steps", "2").exit_code == 0
    assert studio.run("done").status == "completed"
    child = subprocess.Popen([sys.executable, "-m", "specialist", *args, "--out", str(runs / "cli"),
                              "--max-steps", "5000", "--set", "logging_steps=1", "--set", "threads=1"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        _wait(lambda: (runs / "cli" / "metrics.jsonl").exists() and (runs / "cli" / "metrics.jsonl").stat().st_size)
        assert studio.run("cli").status == "running"
        listed = client.get("/train", headers=HTML).text
        assert re.search(r'href="/train/cli">cli</a> <span class="badge running">', listed)
        assert re.search(r'href="/train/done">done</a> <span class="badge completed">', listed)
        page = client.get("/train/cli", headers=HTML).text
        assert 'id="run-status">running<' in page and 'id="stop"' not in page  # not the studio's to stop
        refused = client.post("/train", data={"data": str(data), "run_name": "cli", "overwrite": "on"}, headers=HTML)
        assert "already running in this run folder" in refused.text
        assert "already running" in client.post("/train/cli/resume", headers=HTML).text
        assert not studio.jobs.all()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert json.loads((runs / "cli" / "run.json").read_text())["status"] == "running"  # nobody wrote otherwise
    assert studio.run("cli").status == "stopped"


def _wait(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.split("\n\n"):
        kind = re.search(r"^event: (.*)$", block, re.M)
        data = re.search(r"^data: (.*)$", block, re.M)
        if kind and data:
            out.append((kind.group(1), json.loads(data.group(1))))
    return out


# ---------------------------------------------------------------- jobs
def test_job_progress_rows_and_error_line_from_a_real_rich_log():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from specialist.studio.jobs import error_line, progress_rows

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                  auto_refresh=False) as progress:
        a = progress.add_task("zero-shot: answering", total=8)
        b = progress.add_task("fine-tuned: answering", total=8)
        for _ in range(5):
            progress.advance(a)
            progress.refresh()
        progress.advance(b, 2)
        progress.refresh()
        console.print("[red]error:[/red] data.jsonl:3: E001 bad JSON")
    rows = {r["label"]: (r["done"], r["total"]) for r in progress_rows(buf.getvalue())}
    assert rows == {"zero-shot: answering": (5, 8), "fine-tuned: answering": (2, 8)}
    assert error_line(buf.getvalue()) == "data.jsonl:3: E001 bad JSON"
    assert error_line("Traceback (most recent call last):\n  File x\nValueError: boom\n") == "ValueError: boom"


def test_a_job_reports_its_exit_code(client):
    jobs = client.app.state.studio.jobs
    job = jobs.start("eval", "k", ["--help"], "t", "busy")
    _wait(lambda: not jobs.get(job.id).running, 10)
    done = jobs.get(job.id)
    assert done.status == "done" and done.returncode == 0 and "Usage" in jobs.log(done)
    job = jobs.start("eval", "k", ["no-such-command"], "t", "busy")
    _wait(lambda: not jobs.get(job.id).running, 10)
    failed = jobs.get(job.id)
    assert failed.status == "failed" and failed.returncode == 2
    page = client.get(f"/jobs/{job.id}").text
    assert 'class="badge failed"' in page


# ---------------------------------------------------------------- proof
def _report(run: Path) -> dict:
    def answers(texts, failed=(), facts=None):
        return [{"prompt": f"pytanie {i}", "reference": f"wzór {i}", "answer": t,
                 "failed_rules": list(failed[i]) if failed else [], "fact_ok": facts[i] if facts else None,
                 "style_score": 0.5, "words": len(t.split())}
                for i, t in enumerate(texts)]
    doc = {"examples": 3, "data": "eval.jsonl", "verdict": "For this task fine-tuning gave …", "comparison": [],
           "contenders": [
               {"name": "zero-shot", "metrics": {"chrf": 10.0, "style_adherence": 0.0},
                "answers": answers(["Hello there", "same answer", "Lorem ipsum dolor"], facts=[None, False, None])},
               {"name": "prompt-engineering", "metrics": {"chrf": 20.0, "style_adherence": 0.5},
                "answers": answers(["Cześć! Mamy kawę.", "same answer", "Zupełnie coś innego tutaj"])},
               {"name": "fine-tuned", "metrics": {"chrf": 30.0, "style_adherence": 1.0},
                "answers": answers(["Cześć! Mamy kawę.", "same answer", "xyz"], failed=[(), (), ("greeting",)])}]}
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "report.json").write_text(json.dumps(doc), encoding="utf-8")
    (run / "run.json").write_text(json.dumps({"status": "completed"}))
    (run / "adapter").mkdir()
    return doc


def test_proof_shows_answers_side_by_side_with_filters(client, runs):
    _report(runs / "r")
    page = client.get("/proof", params={"run": "r"}, headers=HTML).text
    assert page.count('class="prompt card"') == 3 and page.count('class="answer ') == 9
    assert '<td class="best">30.0</td>' in page  # chrF: fine-tuned best, higher is better
    failing = client.get("/proof", params={"run": "r", "show": "failing-rule"}, headers=HTML).text
    assert re.findall(r'id="prompt-(\d+)"', failing) == ["3"] and "rule: greeting" in failing
    wrong = client.get("/proof", params={"run": "r", "show": "wrong-fact"}, headers=HTML).text
    assert re.findall(r'id="prompt-(\d+)"', wrong) == ["2"]
    ranked = client.get("/proof", params={"run": "r", "show": "disagreement"}, headers=HTML).text
    order = re.findall(r'id="prompt-(\d+)"', ranked)
    assert order[-1] == "2" and sorted(order) == ["1", "2", "3"]  # every contender said the same there


def test_proof_says_what_a_fact_answer_misses_says_wrongly_or_invents(client, runs):
    doc = _report(runs / "r")
    ft = doc["contenders"][2]["answers"]
    ft[0].update(answer="Pasują do Nespresso i do Dolce Gusto.", fact_ok=False, missing_facts=[],
                 wrong_found=[r"(?<!nie )do\s+dolce"])
    for c in doc["contenders"]:
        c["answers"][1]["reference"] = "Dostawa kosztuje 14,99 zł."  # one reference per prompt, as in a report
    ft[1].update(fact_ok=False, missing_facts=[r"14[,.]99\s*zł"])
    ft[2].update(answer="Otwieramy w Gdańsku w maju, sprawdź na stronie.", abstained=False)
    doc["contenders"][1]["answers"][2]["abstained"] = True
    (runs / "r" / "eval" / "report.json").write_text(json.dumps(doc), encoding="utf-8")
    page = client.get("/proof", params={"run": "r"}, headers=HTML).text
    assert "says wrongly: do Dolce" in page  # the answer's own words
    assert "missing: 14,99 zł" in page  # the reference's words, not the regex
    assert "answers an unanswerable question" in page and "offers to check" in page
    wrong = client.get("/proof", params={"run": "r", "show": "wrong-fact"}, headers=HTML).text
    assert re.findall(r'id="prompt-(\d+)"', wrong) == ["1", "2", "3"]  # an invention is a wrong fact too


def test_eval_of_a_training_run_is_refused(client, runs, tmp_path):
    _report(runs / "r")
    studio = client.app.state.studio
    with open(studio.jobs._lock_path(studio.train_key("r")), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = client.post("/proof", data={"run": "r", "data": str(_dataset(tmp_path / "e.jsonl"))}, headers=HTML)
    assert "still training" in r.text


def test_a_short_eval_can_ask_for_fewer_generic_answers(client, runs, tmp_path):
    """The style classifier's generic answers cost the same however few prompts are evaluated
    (64 by default): the form offers the CLI's --style-negatives, and says so."""
    _report(runs / "r")
    page = client.get("/proof?run=r", headers=HTML).text
    assert 'name="style_negatives"' in page and "however few prompts are evaluated" in page
    form = {"run": "r", "data": str(_clean_dataset(tmp_path / "e.jsonl")), "limit": "4", "style_negatives": "8"}
    assert client.post("/proof", data=form, follow_redirects=False).status_code == 303
    job = client.app.state.studio.jobs.latest("eval", "r")
    assert job.argv[job.argv.index("--limit") + 1] == "4" and job.argv[job.argv.index("--style-negatives") + 1] == "8"
    r = client.post("/proof", data={**form, "run": "r2", "style_negatives": "many"}, headers=HTML)
    assert "error: --style-negatives: a whole number" in r.text


def test_the_canary_is_a_ticked_box_and_unticking_it_skips_it(client, runs, tmp_path):
    """The general-ability section costs minutes whatever the eval's size: the form shows it
    ticked (the CLI's default) and an unticked box (left out of the form) is --no-canary."""
    _report(runs / "r")
    page = client.get("/proof?run=r", headers=HTML).text
    assert 'id="e-canary" name="canary" type="checkbox" value="on" checked' in page
    data = str(_clean_dataset(tmp_path / "e.jsonl"))
    jobs = client.app.state.studio.jobs
    for run, form, skipped in (("r", {"canary": "on"}, False), ("r2", {}, True)):
        assert client.post("/proof", data={"run": run, "data": data, **form}, follow_redirects=False).status_code == 303
        job = jobs.latest("eval", run)
        assert ("--no-canary" in job.argv) is skipped
        jobs.cancel(job)


# ---------------------------------------------------------------- chat and export
def test_chat_streams_pieces_and_reports_errors_in_one_line(client, tiny_chat_model):
    r = client.post("/chat/stream", json={"model": str(tiny_chat_model), "prompt": "Czy macie kawę?",
                                          "max_new_tokens": 6, "temperature": 1.0, "system": "Odpowiadaj krótko."})
    events = _events(r.text)
    pieces = [e["text"] for kind, e in events if kind == "piece"]
    assert pieces and events[-1][0] == "done" and events[-1][1]["completion_tokens"] == 6
    r = client.post("/chat/stream", json={"model": "no-such-model-anywhere", "prompt": "hej"})
    (kind, data), = _events(r.text)
    assert kind == "error" and "no-such-model-anywhere" in data["message"] and "\n" not in data["message"]
    r = client.post("/chat/stream", json={"model": str(tiny_chat_model), "prompt": ""})
    assert r.status_code == 422


def test_chat_with_a_knowledge_run_retrieves_once_per_message_from_an_index_built_once(
        client, runs, lively_chat_model, tmp_path, monkeypatch):
    """A run trained with a knowledge base: the page gets the passages its prompt was given
    (the shipping passage for a shipping question), retrieval runs once per message and the
    run's retrieval index is built once for the run, not per message."""
    from specialist.knowledge import runtime
    from specialist.knowledge.passages import load_knowledge
    from specialist.knowledge.snapshot import RetrievalSettings, save_snapshot
    from tests.helpers import make_adapter_run

    kb = tmp_path / "kb.md"
    kb.write_text("# Dostawa\n\nWysyłka kurierem kosztuje 14,99 zł.\n\n# Zwroty\n\nZwrot w ciągu 30 dni.\n",
                  encoding="utf-8")
    run = make_adapter_run(lively_chat_model, runs / "kb-run")
    save_snapshot(load_knowledge(kb), run, RetrievalSettings(top_k=1, min_share=0.0))
    built, searched = [], []
    real_init, real_retrieve = runtime.KnowledgeContext.__init__, runtime.KnowledgeContext.retrieve
    monkeypatch.setattr(runtime.KnowledgeContext, "__init__",
                        lambda self, *a, **k: (built.append(1), real_init(self, *a, **k))[1])
    monkeypatch.setattr(runtime.KnowledgeContext, "retrieve",
                        lambda self, q: (searched.append(q), real_retrieve(self, q))[1])
    for prompt in ("Ile kosztuje wysyłka kurierem?", "A zwrot?"):
        events = _events(client.post("/chat/stream", json={"model": "kb-run", "prompt": prompt,
                                                            "max_new_tokens": 3}).text)
        assert events[0][0] == "passages" and events[-1][0] == "done", events
    assert events[0][1]["passages"][0]["id"] == "kb#zwroty"
    assert len(built) == 1 and searched == ["Ile kosztuje wysyłka kurierem?", "A zwrot?"]
    events = _events(client.post("/chat/stream", json={"model": "kb-run", "prompt": "hej", "max_new_tokens": 2,
                                                        "knowledge": False}).text)
    assert [k for k, _ in events if k == "passages"] == []


def test_downloads_stay_inside_the_runs_folder(client, runs, tmp_path):
    (runs / "exports" / "r-gguf-f16").mkdir(parents=True)
    (runs / "exports" / "r-gguf-f16" / "r-f16.gguf").write_bytes(b"GGUF")
    assert client.get("/files/exports/r-gguf-f16/r-f16.gguf").content == b"GGUF"
    (tmp_path / "secret.txt").write_text("no")
    assert client.get("/files/../secret.txt").status_code != 200
    assert client.get("/files/%2e%2e/secret.txt").status_code != 200
    assert client.get("/files/.studio/jobs").status_code != 200
    (runs / "r").mkdir()
    (runs / "r" / "run.json").write_text(json.dumps({"status": "completed"}))
    (runs / "r" / "adapter").mkdir()
    page = client.get("/export", params={"run": "r"}, headers=HTML).text
    assert 'href="/files/exports/r-gguf-f16/r-f16.gguf"' in page
    r = client.post("/export", data={"run": "r", "format": "zip"}, headers=HTML)
    assert "use one of merged, gguf, ollama" in r.text


# ---------------------------------------------------------------- the server's deadlines
def test_slow_clients_get_the_serve_commands_deadlines(runs):
    """A request head or body trickled in gets 408 at the request deadline (the serve command's
    protocol, specialist.serve.http), and the studio answers others meanwhile."""
    import socket
    import threading

    import httpx

    from tests.studio_browser import running_studio
    from tests.test_server_hardening import trickle

    with running_studio(runs, request_timeout=1.5) as url:
        port = int(url.rsplit(":", 1)[1])
        outs: list[dict] = [{}, {}]
        head = b"POST /data/open HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\n"
        threads = [threading.Thread(target=trickle, args=(port, head, (b"x-%d: y\r\n" % i for i in range(100)),
                                                          outs[0])),
                   threading.Thread(target=trickle, args=(port, head + b"content-length: 200\r\n\r\n",
                                                          (b"a" for _ in range(200)), outs[1]))]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert httpx.get(url + "/train", timeout=10).status_code == 200  # served meanwhile
        for t in threads:
            t.join(timeout=30)
        for out in outs:
            assert out["reply"].startswith(b"HTTP/1.1 408"), out["reply"][:200]
            assert 1.5 <= out["seconds"] < 1.5 + 3
        with socket.create_connection(("127.0.0.1", port)) as idle:  # a connection that never asks is closed
            idle.settimeout(10)
            assert idle.recv(100) == b""


def test_specialist_studio_serves_with_the_deadlines(runs, monkeypatch):
    import uvicorn

    from specialist.serve.http import TimedH11Protocol
    from specialist.studio.app import serve

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config))
    serve("127.0.0.1", 7861, StudioSettings(runs=runs, request_timeout=7.0))
    (config,) = served
    assert issubclass(config.http, TimedH11Protocol) and config.http.request_timeout == 7.0
    assert config.http.send_timeout == StudioSettings().send_timeout and config.port == 7861
