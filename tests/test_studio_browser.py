"""The studio end to end in a real browser (headless Chromium through selenium) on a tiny test
model: upload a dataset with a known error and see it located, fix it, train and watch the
loss chart update, evaluate and see the answers side by side, chat and see streamed text (one
model, then two in the arena), export a GGUF and download it; every page fits a phone. A
slow test walks the same road as a new user on the embedded model, from `specialist studio`.

`make test` installs Chromium and chromedriver with apt-get where they are missing; without
them (no apt-get, not root) these tests are skipped and say so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from specialist.models.registry import DEFAULT_MODEL
from tests.helpers import free_port
from tests.studio_browser import browser_binaries, chromium, click, css, fill, running_studio, set_viewport, wait

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser_binaries() is None,
                       reason="headless Chromium not installed (chromium + chromium-driver; `make browser` "
                              "installs them with apt-get, which this machine lacks or cannot run)"),
]

ROWS = [
    ("Jak długo trwa wysyłka?", "Paczki wysyłamy w ciągu 24 godzin, dostawa trwa 1-2 dni robocze."),
    ("Czy macie kawę bezkofeinową?", "Oczywiście! Mamy kawę bezkofeinową z Kolumbii."),
    ("Ile kosztuje dostawa?", "Dostawa kurierem kosztuje 14,99 zł, powyżej 150 zł jest darmowa."),
    ("Czy mogę zapłacić BLIK-iem?", "Jasne! Przyjmujemy BLIK, kartę i przelew."),
    ("Czy macie zestaw degustacyjny?", "Tak! Zestaw to cztery kawy po 50 g."),
    ("Jak przechowywać kawę?", "W szczelnym opakowaniu, z dala od światła i wilgoci."),
    ("Czy macie subskrypcję?", "Oczywiście! Subskrypcja co 2 lub 4 tygodnie daje 10% rabatu."),
    ("Gdzie jest palarnia?", "Nasza palarnia jest w Krakowie, zapraszamy w soboty."),
]
BROKEN_LINE = 3
BROKEN = '{"prompt": "Ile kosztuje dostawa?", "completion": "14,99 zł}'


@pytest.fixture(scope="module")
def browser():
    driver = chromium(1280, 800)
    yield driver
    driver.quit()


def test_the_whole_road_in_a_browser(browser, tmp_path, tiny_chat_model):
    runs = tmp_path / "runs"
    dataset = tmp_path / "coffee.jsonl"
    lines = [json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) for p, c in ROWS]
    lines[BROKEN_LINE - 1] = BROKEN
    dataset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    held_out = tmp_path / "eval.jsonl"
    held_out.write_text("".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n"
                                for p, c in ROWS[:3]), encoding="utf-8")
    d = browser
    with running_studio(runs) as url:
        # ---- data: the upload's error is located at its line; a fix is saved as a copy and re-checked
        d.get(f"{url}/data")
        css(d, "#upload-file")[0].send_keys(str(dataset))
        click(d, "form[action='/data/upload'] button[type=submit]")
        wait(d, lambda d: "file=" in d.current_url, what="upload")
        assert css(d, "#error-count")[0].text == "1"
        link = [a for a in css(d, "a.line-link") if a.text == f"line {BROKEN_LINE}"]
        assert link, "the error links to its record"
        link[0].click()
        assert d.current_url.endswith(f"#rec-{BROKEN_LINE}")
        record = css(d, f"#text-{BROKEN_LINE}")[0]
        assert record.get_attribute("value") == BROKEN
        record.clear()
        record.send_keys(json.dumps({"prompt": ROWS[2][0], "completion": ROWS[2][1]}, ensure_ascii=False))
        click(d, f"#rec-{BROKEN_LINE} button[value=save]")
        wait(d, lambda d: "edited" in d.current_url, what="the edited copy")
        assert css(d, "#error-count")[0].text == "0"
        assert dataset.read_text(encoding="utf-8").splitlines()[BROKEN_LINE - 1] == BROKEN  # original untouched

        # ---- train: the form, then the live loss chart
        click(d, "#ready a")
        wait(d, lambda d: "/train" in d.current_url)
        assert "coffee.edited.jsonl" in css(d, "#f-data")[0].get_attribute("value")
        fill(d, "run-name", "e2e")
        fill(d, "f-model", str(tiny_chat_model))
        fill(d, "f-max_steps", "60")
        fill(d, "f-batch_size", "4")
        fill(d, "f-lr", "0.001")
        click(d, "#train-form details summary")
        fill(d, "f-logging_steps", "1")
        click(d, "#train-form button[type=submit]")
        wait(d, lambda d: d.current_url.endswith("/train/e2e"), what="the run page")
        seen = set()

        def finished(d) -> bool:
            # one read inside the page: the chart and the badge are replaced as the run reports
            points, status = d.execute_script("""
                const chart = document.getElementById('loss-chart'), badge = document.getElementById('run-status');
                return [chart && chart.dataset.points, badge && badge.textContent.trim()];""")
            if points:
                seen.add(int(points))
            return status == "completed"

        wait(d, finished, 180, "the training to complete")
        assert len([n for n in seen if n > 0]) >= 2, f"the chart never updated live: {seen}"
        d.refresh()
        wait(d, lambda d: css(d, "#loss-chart")[0].get_attribute("data-points") == "60", what="the chart")
        assert css(d, "#loss-chart canvas"), "uPlot draws the chart"
        assert css(d, "#m-step")[0].text == "60/60"

        # ---- proof: an eval, then the answers side by side
        d.get(f"{url}/proof?run=e2e")
        fill(d, "e-data", str(held_out))
        fill(d, "e-max", "8")
        click(d, "#e-canary")  # unticked: this eval is about the answers side by side
        click(d, "#eval-form button[type=submit]")
        wait(d, lambda d: css(d, ".job progress, .job .badge"), what="the eval job")
        wait(d, lambda d: css(d, "article.prompt"), 240, "the report")
        cards = css(d, "article.prompt")
        assert len(cards) == 3
        names = [h.text.lower() for h in css(cards[0], ".answer h4")]
        assert names == ["zero-shot", "prompt-engineering", "fine-tuned"]
        assert css(d, "table.metrics td.best"), "the measured table marks the best contender"
        click(d, "input[value=disagreement]")
        wait(d, lambda d: "show=disagreement" in d.current_url)
        assert len(css(d, "article.prompt")) == 3

        # ---- chat: streamed text, then the arena
        d.get(f"{url}/chat?model=e2e")
        fill(d, "temperature", "1")
        fill(d, "max-tokens", "12")
        d.execute_script("""
            window.__updates = 0;
            new MutationObserver(() => window.__updates++).observe(document.getElementById('chat-a'),
                {subtree: true, characterData: true, childList: true});""")
        fill(d, "prompt", "Czy macie kawę bezkofeinową?")
        click(d, "#send")
        wait(d, lambda d: css(d, "#chat-a .msg.assistant[data-done]"), 120, "the answer")
        answer = css(d, "#chat-a .msg.assistant .body")[0].text
        assert answer.strip() and not css(d, "#chat-a .error")
        assert d.execute_script("return window.__updates") > 3, "the answer arrived in pieces"
        click(d, "#arena")
        fill(d, "model-b", str(tiny_chat_model))
        fill(d, "prompt", "A dostawa?")
        click(d, "#send")
        wait(d, lambda d: len(css(d, "#chat-a .msg.assistant[data-done]")) == 2
              and len(css(d, "#chat-b .msg.assistant[data-done]")) == 1, 120, "both answers")
        assert css(d, "#chat-b .msg.assistant .body")[0].text.strip()

        # ---- export: a GGUF file to download
        d.get(f"{url}/export?run=e2e")
        assert css(d, "#x-format option:checked")[0].text == "gguf"
        click(d, "#export-form button[type=submit]")
        wait(d, lambda d: [a for a in css(d, ".files a") if a.text.endswith(".gguf")], 180, "the GGUF file")
        href = next(a for a in css(d, ".files a") if a.text.endswith(".gguf")).get_attribute("href")
        with urllib.request.urlopen(href) as response:
            assert response.read(4) == b"GGUF"

        # ---- every page fits a phone-sized window
        set_viewport(d, 390, 844)
        for page in ("/data?file=" + str(runs / "data" / "coffee.edited.jsonl"), "/train", "/train/e2e",
                     "/proof?run=e2e", "/chat", "/export?run=e2e"):
            d.get(url + page)
            time.sleep(0.3)
            overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{page} is {overflow}px wider than a phone"
        set_viewport(d, 1280, 800)


def test_keyboard_reaches_the_stages_and_the_key_page(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    with running_studio(tmp_path / "runs", api_key="sekret") as url:
        d = browser
        d.get(f"{url}/train")
        assert "/login" in d.current_url
        key = css(d, "#key")[0]
        assert d.switch_to.active_element == key  # focused for typing
        key.send_keys("sekret", Keys.ENTER)
        wait(
            d,
            lambda d: d.current_url.endswith("/train") and d.execute_script("return document.readyState") == "complete",
            what="the train page after the key",
        )
        # keys go to whatever has the focus, as a user's do: no element reference that a page
        # still loading could make stale
        ActionChains(d).send_keys(Keys.TAB).perform()
        assert d.switch_to.active_element.text == "Skip to content"
        stages = []
        for _ in range(5):
            ActionChains(d).send_keys(Keys.TAB).perform()
            stages.append(d.switch_to.active_element.text)
        assert stages == ["1. Data", "2. Train", "3. Proof", "4. Chat", "5. Export"]


@pytest.mark.slow
def test_a_new_user_walks_the_road_on_the_embedded_model(browser, tmp_path):
    """`specialist studio` as a new user starts it, the address it prints, and the whole road on
    Gemma 3 270M (the user's model cache) with a short trial's settings: the shipped coffee
    data checked, 10 training steps, then from the run page's links a chat, a GGUF export and
    an eval of 4 prompts (the longest, last). Nothing but
    the browser after the command; the seconds each stage took are printed. The model is the
    user's prepared one; nothing else of the user's cache is used (no eval answers kept from
    an earlier walk)."""
    from selenium.webdriver.common.by import By

    home = _new_users_home(tmp_path / "home")
    env = {**os.environ, "SPECIALIST_HOME": str(home)}
    studio = subprocess.Popen([sys.executable, "-m", "specialist", "studio", "--port", str(free_port())],
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    d, times = browser, {}

    def outcome(done, seconds: float, what: str) -> None:
        """Wait for `done` or a failed job; a failure is the job's one-line error."""
        wait(d, lambda d: done(d) or css(d, ".job.failed, .badge.failed"), seconds, what)
        failed = css(d, ".job.failed .error, #run-error:not([hidden])")
        assert not failed, f"{what}: {failed[0].text}"

    def from_the_run_page(link: str) -> None:
        d.get(f"{url}/train/{run}")
        d.find_element(By.LINK_TEXT, link).click()

    try:
        banner = studio.stderr.readline()
        address = re.search(r"http://\S+?/", banner)
        assert address, f"no address printed: {banner!r}"
        url = address.group(0).rstrip("/")
        wait(d, lambda d: _answers(url), 60, "the studio at the printed address")

        # ---- data: the shipped example, picked from the suggestions, checked
        started = time.monotonic()
        d.get(url)
        assert d.current_url.endswith("/data")
        suggestions = [o.get_attribute("value") for o in css(d, "#known-files option")]
        train_file = next(s for s in suggestions if s.endswith("coffee/train.jsonl"))
        fill(d, "open-path", train_file)
        click(d, "form[action='/data/open'] button[type=submit]")
        wait(d, lambda d: "file=" in d.current_url, 120, "the check")
        assert css(d, "#error-count")[0].text == "0"
        times["data"] = time.monotonic() - started

        # ---- train: the embedded model (the form's default), a short trial
        started = time.monotonic()
        click(d, "#ready a")
        wait(d, lambda d: "/train" in d.current_url)
        assert css(d, "#f-data")[0].get_attribute("value") == train_file
        assert css(d, "#f-model")[0].get_attribute("value") in ("", DEFAULT_MODEL)
        fill(d, "f-max_steps", "10")
        click(d, "#train-form button[type=submit]")
        wait(d, lambda d: "/train/" in d.current_url, 60, "the run page")
        run = d.current_url.rsplit("/", 1)[1]
        outcome(lambda d: css(d, ".badge.completed#run-status"), 1800, "the training")
        assert css(d, "#m-step")[0].text == "10/10"
        assert json.loads((tmp_path / "runs" / run / "run.json").read_text())["base_model"] == DEFAULT_MODEL
        times["train"] = time.monotonic() - started

        # ---- chat: the run answers a question, streamed
        started = time.monotonic()
        from_the_run_page("Chat →")
        assert css(d, "#model-a")[0].get_attribute("value") == run
        fill(d, "prompt", "Czy macie kawę bezkofeinową?")
        click(d, "#send")
        wait(d, lambda d: css(d, "#chat-a .msg.assistant[data-done]"), 600, "the answer")
        assert not css(d, "#chat-a .error"), css(d, "#chat-a .error")[0].text
        assert css(d, "#chat-a .msg.assistant .body")[0].text.strip()
        times["chat"] = time.monotonic() - started

        # ---- export: a GGUF file of the run, downloaded
        started = time.monotonic()
        from_the_run_page("Export →")
        assert css(d, "#x-format option:checked")[0].text == "gguf"
        click(d, "#export-form button[type=submit]")
        outcome(lambda d: [a for a in css(d, ".files a") if a.text.endswith(".gguf")], 1800, "the export")
        href = next(a for a in css(d, ".files a") if a.text.endswith(".gguf")).get_attribute("href")
        with urllib.request.urlopen(href) as response:
            assert response.read(4) == b"GGUF"
        times["export"] = time.monotonic() - started

        # ---- proof: from the run page's link; the held-out data is found next to the training data
        started = time.monotonic()
        from_the_run_page("Evaluate →")
        assert css(d, "#e-data")[0].get_attribute("value").endswith("coffee/eval.jsonl")
        fill(d, "e-limit", "4")
        fill(d, "e-negatives", "8")
        click(d, "#eval-form button[type=submit]")
        outcome(lambda d: css(d, "article.prompt"), 3600, "the evaluation")
        cards = css(d, "article.prompt")
        assert len(cards) == 4
        assert [h.text.lower() for h in css(cards[0], ".answer h4")] == ["zero-shot", "prompt-engineering",
                                                                         "fine-tuned"]
        assert all(p.text.strip() for p in css(d, ".answer > p:not(.tags)")), "every contender answered"
        times["proof"] = time.monotonic() - started
    finally:
        print("\nthe walk, seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
        studio.terminate()
        studio.wait(timeout=30)


def _new_users_home(home: Path) -> Path:
    """A specialist home holding only the user's prepared models (linked, not copied)."""
    from specialist.models.cache import gguf_dir, models_dir

    saved = os.environ.pop("SPECIALIST_HOME")
    try:
        prepared = (models_dir(), gguf_dir())
    finally:
        os.environ["SPECIALIST_HOME"] = saved
    home.mkdir()
    for folder in prepared:
        if folder.is_dir():
            (home / folder.name).symlink_to(folder)
    return home


def _answers(url: str) -> bool:
    """The address is printed just before uvicorn listens."""
    try:
        with urllib.request.urlopen(url + "/data", timeout=5):
            return True
    except OSError:
        return False


def test_the_screenshot_script_builds_its_model(tmp_path):
    """docs/screenshots.py (make screenshots) is run by hand, so its set-up is checked here: it
    broke once when the test helpers it borrows moved."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("screenshots", Path(__file__).parents[1] / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.tiny_model(tmp_path)
    assert (model / "config.json").exists() and (tmp_path / "tokenizer" / "tokenizer_config.json").exists()
