"""The chat page at ``/`` in a real headless Chromium (Selenium), against a live ``openm1 serve``.

The served checkpoint is a tiny model whose layers add nothing (zero output projections), so each next
token depends on the current one only; its embeddings and LM head make it write, after the prompt's
last token, ``<think>Why not?</think>Sure!</s>``. The page must stream that answer piece by piece,
show the reasoning while it streams, fold it once the answer proper starts, and unfold it on a click.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="the chat-page test needs selenium: pip install 'openm1[test]'"
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from openm1.config import FULL, LINEAR, ModelConfig  # noqa: E402
from openm1.generate import ByteTokenizer  # noqa: E402
from openm1.model import MiniMaxM1ForCausalLM  # noqa: E402

REASONING, ANSWER = "Why not?", "Sure!"
ROOT = Path(__file__).resolve().parents[2]


def _browser() -> tuple[str, str]:
    """Chromium and its driver (``$OPENM1_CHROMIUM`` / ``$OPENM1_CHROMEDRIVER`` override), else skip."""
    chromium = os.environ.get("OPENM1_CHROMIUM") or shutil.which("chromium")
    chromium = chromium or shutil.which("chromium-browser")
    driver = os.environ.get("OPENM1_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "headless Chromium is not installed (chromium and chromedriver not on PATH): "
            "apt-get install chromium chromium-driver, or run ./test.sh as root, which installs them"
        )
    return chromium, driver


def bigram_checkpoint(folder: Path) -> None:
    """A checkpoint that answers ``<think>REASONING</think>ANSWER</s>`` to any chat prompt.

    Zero output projections make every layer pass the normalised embedding through, so the logits are
    ``lm_head(norm(embed(current token)))``: orthonormal embeddings for the script's tokens and LM-head
    rows pointing at their predecessors give each token one successor, 80 logits above the rest.
    """
    tok = ByteTokenizer(512)
    config = ModelConfig(
        vocab_size=512, hidden_size=64, num_hidden_layers=2, layer_types=[LINEAR, FULL],
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, rotary_dim=32, block_size=16,
        num_local_experts=2, num_experts_per_tok=1, intermediate_size=32, eos_token_id=tok.eos_token_ids[0],
    )  # fmt: skip
    torch.manual_seed(0)
    model = MiniMaxM1ForCausalLM(config)
    script = (
        tok.encode("\n")  # the chat prompt ends with "<s>assistant\n"
        + tok.encode(f"<think>{REASONING}</think>{ANSWER}")
        + tok.eos_token_ids
    )
    assert len(set(script)) == len(script), "a bigram script needs distinct tokens"
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            (attn.out_proj if hasattr(attn, "out_proj") else attn.o_proj).weight.zero_()
            layer.mlp.experts.down_proj.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        head.zero_()
        for i, (cur, nxt) in enumerate(zip(script[:-1], script[1:], strict=True)):
            embed[cur] = torch.nn.functional.one_hot(torch.tensor(i), config.hidden_size).float()
            head[nxt, i] = 10.0  # norm(e_i) = 8 e_i: logit 80 for the successor, 0 for the rest
    model.save_pretrained(folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    _browser()
    folder = tmp_path_factory.mktemp("ckpt") / "bigram-chat"
    bigram_checkpoint(folder)
    port = _free_port()
    log = (tmp_path_factory.getbasetemp() / "serve.log").open("w")
    cmd = [sys.executable, "-m", "openm1", "serve", str(folder), "--port", str(port), "--device", "cpu"]
    cmd += ["--max-len", "512", "--max-batch", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if json.loads(resp.read())["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("openm1 serve did not answer /health within 60 s")
        if proc.poll() is not None:
            log.flush()
            pytest.fail(f"openm1 serve exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(live_server):
    chromium, driver_path = _browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# Record, in order, every text the page puts in an answer or a reasoning box, and every change of the
# reasoning block's ``open``/``hidden`` attributes (setting textContent replaces the text node, so each
# record's added node holds the text at that moment, even when several deltas arrive in one read).
RECORDER = """
window.__records = [];
new MutationObserver((muts) => {
  for (const m of muts) {
    if (m.type === "childList" && m.addedNodes.length && m.addedNodes[0].nodeType === 3) {
      const kind = m.target.classList.contains("think") ? "think" : m.target.className;
      window.__records.push([kind, m.addedNodes[0].data]);
    } else if (m.type === "attributes" && m.target.tagName === "DETAILS") {
      window.__records.push([m.attributeName, m.target.hasAttribute(m.attributeName)]);
    }
  }
}).observe(document.getElementById("log"),
  {childList: true, subtree: true, attributes: true, attributeFilter: ["open", "hidden"]});
"""


WATCHED = ("think", "answer", "open", "hidden")


def _send(browser, text: str, n_assistant: int) -> None:
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)  # Enter sends (the page's keydown handler)

    def answered(d) -> bool:  # noqa: ANN001 - the driver
        bubbles = d.find_elements(By.CSS_SELECTOR, ".assistant")
        if len(bubbles) != n_assistant or not d.find_element(By.ID, "send").is_enabled():
            return False
        last = bubbles[-1]
        meta = last.find_element(By.CSS_SELECTOR, ".meta").text
        return "error" in last.get_attribute("class") or bool(meta)

    WebDriverWait(browser, 30).until(answered)


def test_page_streams_the_answer_and_folds_the_reasoning(browser, live_server):
    browser.get(live_server + "/")
    assert "bigram-chat" in browser.title
    browser.execute_script(RECORDER)
    _send(browser, "Shall we?", 1)

    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".user")] == ["Shall we?"]
    bubble = browser.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
    assert bubble.find_element(By.CSS_SELECTOR, ".answer").text == ANSWER
    assert bubble.find_element(By.CSS_SELECTOR, ".meta").text.startswith("stop")

    records = [r for r in browser.execute_script("return window.__records") if r[0] in WATCHED]
    thinks = [v for k, v in records if k == "think"]
    answers = [v for k, v in records if k == "answer"]
    # streamed: one growing prefix per token, not the whole text at once
    assert thinks == [REASONING[: i + 1] for i in range(len(REASONING))]
    assert answers == [ANSWER[: i + 1] for i in range(len(ANSWER))]
    kinds = [k if k in ("think", "answer") else f"{k}={v}" for k, v in records]
    first_answer = kinds.index("answer")
    assert kinds.index("hidden=False") < kinds.index("think")  # the block shows with the first reasoning
    assert "open=False" not in kinds[:first_answer]  # open while the reasoning streams
    assert kinds[first_answer + 1] == "open=False"  # folded as soon as the answer starts
    assert all(k == "answer" for k in kinds[first_answer + 2 :])

    details = bubble.find_element(By.CSS_SELECTOR, "details.reasoning")
    think = details.find_element(By.CSS_SELECTOR, ".think")
    assert details.is_displayed() and not think.is_displayed()  # folded, its summary still there
    details.find_element(By.TAG_NAME, "summary").click()
    assert think.is_displayed() and think.text == REASONING


def test_page_keeps_the_conversation_and_shows_server_errors(browser, live_server):
    browser.get(live_server + "/")
    _send(browser, "One?", 1)
    _send(browser, "Two?", 2)  # the second request carries the whole history
    answers = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".assistant .answer")]
    assert answers == [ANSWER, ANSWER]

    limit = browser.find_element(By.ID, "max")
    limit.clear()
    limit.send_keys("100000")  # more than the server's --max-len
    _send(browser, "Three?", 3)
    bubble = browser.find_elements(By.CSS_SELECTOR, ".assistant")[-1]
    assert "error" in bubble.get_attribute("class").split()
    assert "max_tokens" in bubble.find_element(By.CSS_SELECTOR, ".answer").text
    assert browser.find_element(By.ID, "send").is_enabled()  # ready for the next message
