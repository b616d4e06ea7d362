"""Screenshots of every studio page for the README: docs/studio-<page>.png at 1280×800 and
docs/studio-<page>-phone.png at 390×844.

    make screenshots            # or: .venv/bin/python docs/screenshots.py [--arena-model gemma-3-270m]

Walks the road as a user would, in headless Chromium (the system's, as the browser tests):
uploads the coffee-shop data with one broken record, fixes it, trains a tiny test model for a
few steps (so it takes a minute, not an hour: its answers are noise), evaluates it, chats with
it next to --arena-model, exports a GGUF. Needs chromium and chromium-driver (make browser)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS = ROOT / "docs"
COFFEE = ROOT / "examples" / "coffee"


def tiny_model(folder: Path) -> Path:
    """The test suite's tiny Llama with SmolLM2's real tokenizer (built in seconds)."""
    from tests.helpers import build_tiny_model, save_chat_tokenizer

    return build_tiny_model(folder / "tiny-model", save_chat_tokenizer(folder / "tokenizer"), "llama")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arena-model", default="gemma-3-270m", help="the second model in the chat arena")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from tests import studio_browser as page
    from tests.studio_browser import chromium, running_studio, set_viewport

    work = Path(tempfile.mkdtemp(prefix="studio-screenshots-"))
    model = tiny_model(work)
    lines = (COFFEE / "train.jsonl").read_text(encoding="utf-8").splitlines()
    lines[6] = lines[6][:-2]  # a record cut mid-string: the error the Data page locates
    dataset = work / "coffee-train.jsonl"
    dataset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    driver = chromium(1280, 800)

    css, fill, click = (partial(f, driver) for f in (page.css, page.fill, page.click))

    def wait(condition, seconds: float = 300, what: str = "") -> None:
        page.wait(driver, lambda d: condition(), seconds, what)

    def shoot(name: str, url: str | None = None, scroll_to: str | None = None) -> None:
        for suffix, size in (("", (1280, 800)), ("-phone", (390, 844))):
            set_viewport(driver, *size)
            if url:
                driver.get(url)
            time.sleep(1.0)
            if scroll_to and css(scroll_to):
                driver.execute_script("document.querySelector(arguments[0]).scrollIntoView()", scroll_to)
                time.sleep(0.3)
            path = args.out / f"studio-{name}{suffix}.png"
            driver.save_screenshot(str(path))
            print(f"wrote {path}", file=sys.stderr)
        set_viewport(driver, 1280, 800)

    try:
        with running_studio(work / "runs") as url:
            driver.get(f"{url}/data")
            css("#upload-file")[0].send_keys(str(dataset))
            click("form[action='/data/upload'] button[type=submit]")
            wait(lambda: "file=" in driver.current_url, what="upload")
            shoot("data", scroll_to="#summary-h")
            fixed = json.dumps(json.loads(lines[6] + '"}'), ensure_ascii=False)
            fill("text-7", fixed)
            click("#rec-7 button[value=save]")
            wait(lambda: "edited" in driver.current_url, what="the fix")

            click("#ready a")
            wait(lambda: "/train" in driver.current_url)
            fill("run-name", "coffee-tiny")
            fill("f-model", str(model))
            fill("f-max_steps", "80")
            fill("f-lr", "0.001")
            click("#train-form details summary")
            fill("f-logging_steps", "2")
            click("#train-form details summary")
            shoot("train-form")
            click("#train-form button[type=submit]")
            wait(lambda: bool(css("#run-status")) and css("#run-status")[0].text == "completed", what="training")
            shoot("train", f"{url}/train/coffee-tiny")

            driver.get(f"{url}/proof?run=coffee-tiny")
            fill("e-data", str(COFFEE / "eval.jsonl"))
            fill("e-limit", "4")
            fill("e-max", "24")
            click("#e-canary")  # the answers side by side are the picture; the canary takes minutes
            click("#eval-form button[type=submit]")
            wait(lambda: bool(css("article.prompt")), 600, "the evaluation")
            shoot("proof", f"{url}/proof?run=coffee-tiny", scroll_to="#verdict-h")
            shoot("proof-answers", f"{url}/proof?run=coffee-tiny&show=disagreement", scroll_to="#answers-h")

            driver.get(f"{url}/chat?model=coffee-tiny&model_b={args.arena_model}")
            fill("system", (COFFEE / "system_prompt.txt").read_text(encoding="utf-8").strip()[:300])
            fill("max-tokens", "48")
            fill("temperature", "0.7")
            fill("prompt", "Czy macie kawę bezkofeinową?")
            click("#send")
            wait(lambda: len(css(".msg.assistant[data-done]")) == 2, 600, "the arena")
            shoot("chat")

            driver.get(f"{url}/export?run=coffee-tiny")
            click("#export-form button[type=submit]")
            wait(lambda: any(a.text.endswith(".gguf") for a in css(".files a")), 600, "the export")
            shoot("export", f"{url}/export?run=coffee-tiny")
    finally:
        driver.quit()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
