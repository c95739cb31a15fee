"""/ui in a real headless Chromium: the status loads, a chat message streams an answer, and an
R1-style model's reasoning shows apart from the answer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from live_stack import SERVED, serving, tiny_engine
from tiny_models import make_tiny_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="chromium and chromedriver not installed (apt-get install chromium chromium-driver)",
)
WAIT_S = 60


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(driver, predicate, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        lambda d: predicate(d), message=what
    )


def text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def chat(driver, message: str) -> object:
    """Type `message` into the playground and send it; returns the finished answer bubble."""
    from selenium.webdriver.common.by import By

    model = driver.find_element(By.ID, "model")
    wait_for(driver, lambda d: model.get_attribute("value"), "the model list")
    for field, value in (("max-tokens", "16"), ("temperature", "0")):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "message").send_keys(message)
    driver.find_element(By.ID, "send").click()
    css = "#conversation .msg.assistant[data-done='true']"
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, css), "a finished answer")
    return driver.find_element(By.CSS_SELECTOR, css)


def test_gateway_page_shows_status_and_streams_an_answer(browser, live, tmp_path_factory):
    from selenium.webdriver.common.by import By

    bad = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(live.gateway_url + "/v1/chat/completions", json=bad).status_code == 404
    browser.get(live.gateway_url + "/ui")
    wait_for(browser, lambda d: text(d, "#kind") == "gateway", "the status")
    wait_for(browser, lambda d: "replica-1" in text(d, "#replicas"), "the replica table")
    assert text(browser, "#health") == "healthy"
    assert SERVED in text(browser, "#models")
    wait_for(browser, lambda d: "nope" in text(d, "#errors"), "the recent error")

    answer = chat(browser, "Tell me a story.")
    content = answer.find_element(By.CSS_SELECTOR, ".content").text
    assert content and not content.startswith("Error")
    assert int(answer.get_attribute("data-chunks")) >= 3  # it streamed, chunk by chunk
    usage = answer.find_element(By.CSS_SELECTOR, ".usage").text
    assert "completion 16 tok" in usage and "response cache miss" in usage
    wait_for(browser, lambda d: text(d, "#generated") not in ("–", "0"), "the token total")
    shot = os.environ.get("LOCALSEEK_UI_SCREENSHOT")
    browser.save_screenshot(shot or str(tmp_path_factory.mktemp("shot") / "ui.png"))


def test_reasoning_is_shown_apart_from_the_answer(browser, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from tiny_tokenizer import R1_TEMPLATE, save_tiny_tokenizer

    from localseek.server.app import build_app
    from localseek.server.config import ServerConfig

    model = make_tiny_model(tmp_path_factory.mktemp("ui-r1"), "llama", seed=1)
    save_tiny_tokenizer(model, chat_template=R1_TEMPLATE)
    engine = tiny_engine(model)
    try:
        with serving(build_app(engine, ServerConfig(served_model_name="tiny-r1"))) as url:
            browser.get(url + "/ui")
            wait_for(browser, lambda d: text(d, "#kind") == "server", "the status")
            answer = chat(browser, "Think first.")
            reasoning = answer.find_element(By.CSS_SELECTOR, ".reasoning").text
            assert reasoning, "the R1 template opens <think>: the output is reasoning"
            assert answer.find_element(By.CSS_SELECTOR, ".reasoning-label").text == "REASONING"
            assert reasoning not in answer.find_element(By.CSS_SELECTOR, ".content").text
            assert "completion 16 tok" in answer.find_element(By.CSS_SELECTOR, ".usage").text
    finally:
        engine.shutdown()


def test_screenshot_in_docs_exists():
    assert (Path(__file__).parents[2] / "docs" / "ui.png").stat().st_size > 10_000
