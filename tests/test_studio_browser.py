"""The studio end to end in a real browser (headless Chromium through selenium) on a tiny test
model: upload a dataset with a known error and see it located, fix it, train and watch the
loss chart update, evaluate and see the answers side by side, chat and see streamed text (one
model, then two in the arena), export a GGUF and download it; every page fits a phone.

`make test` installs Chromium and chromedriver with apt-get where they are missing; without
them (no apt-get, not root) these tests are skipped and say so."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.studio_browser import browser_binaries, chromium, running_studio, set_viewport

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


def _wait(driver, condition, seconds: float = 60.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _fill(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def _click(driver, selector: str) -> None:
    element = _css(driver, selector)[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


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
        _css(d, "#upload-file")[0].send_keys(str(dataset))
        _click(d, "form[action='/data/upload'] button[type=submit]")
        _wait(d, lambda d: "file=" in d.current_url, what="upload")
        assert _css(d, "#error-count")[0].text == "1"
        link = [a for a in _css(d, "a.line-link") if a.text == f"line {BROKEN_LINE}"]
        assert link, "the error links to its record"
        link[0].click()
        assert d.current_url.endswith(f"#rec-{BROKEN_LINE}")
        record = _css(d, f"#text-{BROKEN_LINE}")[0]
        assert record.get_attribute("value") == BROKEN
        record.clear()
        record.send_keys(json.dumps({"prompt": ROWS[2][0], "completion": ROWS[2][1]}, ensure_ascii=False))
        _click(d, f"#rec-{BROKEN_LINE} button[value=save]")
        _wait(d, lambda d: "edited" in d.current_url, what="the edited copy")
        assert _css(d, "#error-count")[0].text == "0"
        assert dataset.read_text(encoding="utf-8").splitlines()[BROKEN_LINE - 1] == BROKEN  # original untouched

        # ---- train: the form, then the live loss chart
        _click(d, "#ready a")
        _wait(d, lambda d: "/train" in d.current_url)
        assert "coffee.edited.jsonl" in _css(d, "#f-data")[0].get_attribute("value")
        _fill(d, "run-name", "e2e")
        _fill(d, "f-model", str(tiny_chat_model))
        _fill(d, "f-max_steps", "60")
        _fill(d, "f-batch_size", "4")
        _fill(d, "f-lr", "0.001")
        _click(d, "#train-form details summary")
        _fill(d, "f-logging_steps", "1")
        _click(d, "#train-form button[type=submit]")
        _wait(d, lambda d: d.current_url.endswith("/train/e2e"), what="the run page")
        seen = set()

        def finished(d) -> bool:
            points = _css(d, "#loss-chart")[0].get_attribute("data-points") if _css(d, "#loss-chart") else None
            if points:
                seen.add(int(points))
            status = _css(d, "#run-status")
            return bool(status) and status[0].text == "completed"

        _wait(d, finished, 180, "the training to complete")
        assert len([n for n in seen if n > 0]) >= 2, f"the chart never updated live: {seen}"
        d.refresh()
        _wait(d, lambda d: _css(d, "#loss-chart")[0].get_attribute("data-points") == "60", what="the chart")
        assert _css(d, "#loss-chart canvas"), "uPlot draws the chart"
        assert _css(d, "#m-step")[0].text == "60/60"

        # ---- proof: an eval, then the answers side by side
        d.get(f"{url}/proof?run=e2e")
        _fill(d, "e-data", str(held_out))
        _fill(d, "e-max", "8")
        _click(d, "#eval-form button[type=submit]")
        _wait(d, lambda d: _css(d, ".job progress, .job .badge"), what="the eval job")
        _wait(d, lambda d: _css(d, "article.prompt"), 240, "the report")
        cards = _css(d, "article.prompt")
        assert len(cards) == 3
        names = [h.text.lower() for h in _css(cards[0], ".answer h4")]
        assert names == ["zero-shot", "prompt-engineering", "fine-tuned"]
        assert _css(d, "table.metrics td.best"), "the measured table marks the best contender"
        _click(d, "input[value=disagreement]")
        _wait(d, lambda d: "show=disagreement" in d.current_url)
        assert len(_css(d, "article.prompt")) == 3

        # ---- chat: streamed text, then the arena
        d.get(f"{url}/chat?model=e2e")
        _fill(d, "temperature", "1")
        _fill(d, "max-tokens", "12")
        d.execute_script("""
            window.__updates = 0;
            new MutationObserver(() => window.__updates++).observe(document.getElementById('chat-a'),
                {subtree: true, characterData: true, childList: true});""")
        _fill(d, "prompt", "Czy macie kawę bezkofeinową?")
        _click(d, "#send")
        _wait(d, lambda d: _css(d, "#chat-a .msg.assistant[data-done]"), 120, "the answer")
        answer = _css(d, "#chat-a .msg.assistant .body")[0].text
        assert answer.strip() and not _css(d, "#chat-a .error")
        assert d.execute_script("return window.__updates") > 3, "the answer arrived in pieces"
        _click(d, "#arena")
        _fill(d, "model-b", str(tiny_chat_model))
        _fill(d, "prompt", "A dostawa?")
        _click(d, "#send")
        _wait(d, lambda d: len(_css(d, "#chat-a .msg.assistant[data-done]")) == 2
              and len(_css(d, "#chat-b .msg.assistant[data-done]")) == 1, 120, "both answers")
        assert _css(d, "#chat-b .msg.assistant .body")[0].text.strip()

        # ---- export: a GGUF file to download
        d.get(f"{url}/export?run=e2e")
        assert _css(d, "#x-format option:checked")[0].text == "gguf"
        _click(d, "#export-form button[type=submit]")
        _wait(d, lambda d: [a for a in _css(d, ".files a") if a.text.endswith(".gguf")], 180, "the GGUF file")
        href = next(a for a in _css(d, ".files a") if a.text.endswith(".gguf")).get_attribute("href")
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
    from selenium.webdriver.common.keys import Keys

    with running_studio(tmp_path / "runs", api_key="sekret") as url:
        d = browser
        d.get(f"{url}/train")
        assert "/login" in d.current_url
        key = _css(d, "#key")[0]
        assert d.switch_to.active_element == key  # focused for typing
        key.send_keys("sekret", Keys.ENTER)
        _wait(d, lambda d: d.current_url.endswith("/train"), what="the train page after the key")
        body = _css(d, "body")[0]
        body.send_keys(Keys.TAB)
        assert d.switch_to.active_element.text == "Skip to content"
        body = d.switch_to.active_element
        stages = []
        for _ in range(5):
            body.send_keys(Keys.TAB)
            body = d.switch_to.active_element
            stages.append(body.text)
        assert stages == ["1. Data", "2. Train", "3. Proof", "4. Chat", "5. Export"]
