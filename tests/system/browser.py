"""Headless Chromium for the system tests: screenshots of pages and mails
and the axe-core accessibility audit (tests/data/axe/, vendored once).

Chromium runs with a fresh profile and no background networking (the
network may be closed; without these flags it waits on refused
connections). Tests that need it call `need_browser()`, which skips with
the reason when chromium, chromedriver or python3-selenium is missing
(scripts/deps.sh check installs them).
"""
import contextlib
import os
import pathlib
import shutil
import tempfile

import pytest

AXE = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "axe" / "axe.min.js"

FLAGS = ["--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", "--force-device-scale-factor=1"]


def need_browser():
    """Skips the calling test (with the reason) unless Chromium can be driven."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("python3-selenium not installed (scripts/deps.sh check installs it)")
    for cmd in ("chromium", "chromedriver"):
        if shutil.which(cmd) is None:
            pytest.skip(f"{cmd} not installed (scripts/deps.sh check installs "
                        "chromium and chromium-driver)")


@contextlib.contextmanager
def chromium(width=800, height=900):
    """A headless Chromium window of the given size (CSS px)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="matrixd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for f in FLAGS:
        opts.add_argument(f)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    drv = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        drv.set_page_load_timeout(60)
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_view(drv, width, dark=False):
    """Emulates a viewport width (CSS px) and the colour scheme."""
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
    drv.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})


def screenshot(drv, url, path, width, dark=False):
    """A full-page PNG of url at width px into path."""
    import base64
    set_view(drv, width, dark)
    drv.get(url)
    h = drv.execute_script("return document.documentElement.scrollHeight")
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": min(h, 16000), "deviceScaleFactor": 1,
        "mobile": width < 600})
    shot = drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png",
                                                         "captureBeyondViewport": True})
    pathlib.Path(path).write_bytes(base64.b64decode(shot["data"]))


def press(drv, button, timeout=60):
    """Clicks a submit button and waits until the answer page has replaced
    this one and loaded. The old page is told apart by a mark set on its
    window, not by an element handle, whose use during the navigation can
    fail with "does not belong to the document"."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    drv.execute_script("window.__mx_before_press = true")
    button.click()

    def answered(d):
        try:
            return d.execute_script("return window.__mx_before_press === undefined && "
                                    "document.readyState === 'complete'")
        except WebDriverException:  # between the two documents
            return False

    WebDriverWait(drv, timeout).until(answered)


def axe(drv, url):
    """axe-core's violations on url: a list of (rule id, impact, help,
    [target selectors])."""
    drv.get(url)
    return audit(drv)


def audit(drv):
    """axe-core's violations on the page the browser shows now (the answer
    to a form it submitted, say), as axe() gives them."""
    drv.execute_script(AXE.read_text())
    drv.set_script_timeout(120)
    res = drv.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations.map(v => "
        "[v.id, v.impact, v.help, v.nodes.map(n => n.target.join(' '))])))"
        ".catch(e => done([['axe-error', 'critical', String(e), []]]));")
    return [tuple(v) for v in res]
