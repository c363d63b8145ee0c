"""The page at `/` in a real headless browser: Debian's chromium + chromedriver (installed by
`.ci/run`), driven by selenium against `newsrank serve`'s app under uvicorn on a free loopback port.
Skips only when the browser or its driver is absent."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or next(
    (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")


@pytest.fixture(scope="module")
def server(synth_dir, tmp_path_factory):
    """`newsrank serve` on a tiny NRMS run, in a thread; yields (base url, engine)."""
    from test_serve import train_tiny

    from newsrank.serve.app import create_app
    from newsrank.serve.engine import load_engine

    folder = tmp_path_factory.mktemp("browser-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEWSRANK_CACHE", str(folder / "cache"))
        train_tiny("nrms", synth_dir, folder / "nrms")
    engine, seconds = load_engine(folder / "nrms", synth_dir / "dev" / "news.tsv", synth_dir / "dev" / "behaviors.tsv")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(engine, seconds), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", engine
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_pick_a_user_and_see_the_top_10_and_why(server, browser):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, engine = server
    wait = WebDriverWait(browser, 20)
    browser.get(base + "/")
    wait.until(lambda d: "nrms" in d.find_element(By.ID, "model-info").text)
    select = Select(browser.find_element(By.ID, "user-select"))
    users = [o.get_attribute("value") for o in select.options if o.get_attribute("value")]
    assert len(users) == len(engine.users)
    user = users[0]  # the longest history
    select.select_by_value(user)

    history = engine.users[user]
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-list li")) == len(history))
    expected = httpx.post(base + "/recommend", json={"history": history, "user": user, "k": 10}).json()["items"]
    shown = lambda d: [li.get_attribute("data-news-id") for li in d.find_elements(By.CSS_SELECTOR, "#top-list li.rec")]
    wait.until(lambda d: shown(d) == [i["news_id"] for i in expected])
    first = browser.find_elements(By.CSS_SELECTOR, "#top-list li.rec")[0]
    assert expected[0]["title"] in first.text and f"{expected[0]['score']:.4f}" in first.text

    first.click()  # the explanation: candidate words and clicked news shaded by weight
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#explain-clicks li")))
    read = min(len(history), engine.config.data.history_len)  # the model reads the most recent clicks
    assert len(browser.find_elements(By.CSS_SELECTOR, "#explain-clicks li")) == read
    words = browser.find_elements(By.CSS_SELECTOR, ".explain-candidate .word")
    assert words and any("rgba(255, 190, 0" in w.get_attribute("style") for w in words)
    shaded = ["background" in li.find_element(By.TAG_NAME, "span").get_attribute("style")
              for li in browser.find_elements(By.CSS_SELECTOR, "#history-list li")]
    assert shaded == [False] * (len(history) - read) + [True] * read

    # Build a history by hand: clear, click a searched news, and the list follows.
    browser.find_element(By.ID, "clear-history").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#history-list li"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results li"))
    browser.find_elements(By.CSS_SELECTOR, "#search-results li")[0].click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-list li")) == 1)
    clicked = browser.find_element(By.CSS_SELECTOR, "#history-list li").get_attribute("data-news-id")
    expected = httpx.post(base + "/recommend", json={"history": [clicked], "k": 10}).json()["items"]
    wait.until(lambda d: shown(d) == [i["news_id"] for i in expected])
