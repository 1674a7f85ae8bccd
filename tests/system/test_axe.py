"""axe-core (tests/data/axe/) over the web archive of the seed issue in
headless Chromium: no accessibility violation on any page."""
import pytest

import browser
from conftest import Env, SEED


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    browser.need_browser()
    tmp = tmp_path_factory.mktemp("axe")
    env = Env(tmp)
    out = tmp / "out"
    p = env.ctl("render", SEED, "--out", out)
    assert p.returncode == 0, p.stderr
    return out / "public"


def test_archive_index(archive):
    with browser.chromium() as drv:
        v = browser.axe(drv, (archive / "index.html").as_uri())
    assert v == [], v
