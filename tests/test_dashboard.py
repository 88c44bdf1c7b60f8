"""The coordinator's dashboard in headless Chromium during a short run: the member table fills,
the round counter advances without a reload, and a killed member's row changes status.
Screenshots of each stage are saved in the test's tmp directory."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from solders.keypair import Keypair

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not shutil.which("chromedriver"), reason="needs Debian's chromium and chromium-driver"
    ),
]


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def status_url(out: Path) -> str | None:
    log = out / "coordinator.log"
    found = re.search(r"status: (http://\S+)/status\.json", log.read_text()) if log.exists() else None
    return found and found.group(1)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def rows(browser) -> dict[str, str]:
    """key (hex) -> status, as the member table shows them now."""
    script = (
        "return [...document.querySelectorAll('#members_table tbody tr')]"
        ".map(r => [r.dataset.key, r.cells[2].textContent])"
    )
    return dict(browser.execute_script(script))


def test_the_dashboard_follows_a_run_live(tmp_path, browser):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "eranos",
        "sim",
        "--nodes",
        "3",
        "--rounds",
        "12",
        "--kill",
        "2@3",
        "--out",
        str(out),
    ]
    sim = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = wait(lambda: status_url(out), 120, "no status address in the coordinator's log")
        browser.get(url + "/")
        browser.execute_script("window.loadedOnce = true")
        wait(lambda: len(rows(browser)) == 3, 120, "the member table did not fill")
        browser.save_screenshot(str(tmp_path / "1-members.png"))
        first = int(
            wait(
                lambda: (
                    browser.find_element("id", "round").text.isdigit()
                    and browser.find_element("id", "round").text
                ),
                30,
                "no round",
            )
        )
        wait(
            lambda: int(browser.find_element("id", "round").text) > first,
            120,
            "the round counter did not advance",
        )
        assert browser.execute_script("return window.loadedOnce === true")  # the same page, never reloaded
        browser.save_screenshot(str(tmp_path / "2-advanced.png"))
        killed = bytes(Keypair.from_json((out / "keys" / "node-2.json").read_text()).pubkey()).hex()
        wait(
            lambda: rows(browser).get(killed, "").startswith("removed"),
            180,
            "the killed member's row did not change",
        )
        browser.save_screenshot(str(tmp_path / "3-removed.png"))
        others = {k: v for k, v in rows(browser).items() if k != killed}
        assert len(others) == 2 and not any(v.startswith("removed") for v in others.values())
        status = json.loads(browser.execute_script("return fetch('status.json').then(r => r.text())"))
        assert {row["key"] for row in status["member_table"]} == set(rows(browser))
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=120)
        except subprocess.TimeoutExpired:
            sim.kill()
    assert all(
        (tmp_path / name).stat().st_size > 0 for name in ("1-members.png", "2-advanced.png", "3-removed.png")
    )
