"""The web archive of the seed issue and of tests/data/issues/export-62.txt
in headless Chromium: axe-core (tests/data/axe/) finds no accessibility
violation on any page, and no table cell splits a number or a word, on a
phone (375 px) or a desktop (800 px)."""
import pytest

import browser
from conftest import DATA, Env, SEED


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    browser.need_browser()
    tmp = tmp_path_factory.mktemp("axe")
    env = Env(tmp)
    for issue in (SEED, DATA / "issues" / "export-62.txt"):
        p = env.ctl("render", issue, "--out", tmp / "out")
        assert p.returncode == 0, p.stderr
    return tmp / "out" / "public"


def pages(archive):
    return [archive / "index.html"] + sorted((archive / "issues").rglob("*.html"))


def test_axe_archive(archive):
    found = {}
    with browser.chromium() as drv:
        for page in pages(archive):
            v = browser.axe(drv, page.as_uri())
            if v:
                found[str(page.relative_to(archive))] = v
    n = sum(len(v) for v in found.values())
    print("axe-core violations on", len(pages(archive)), "archive pages:", n)
    assert found == {}


# For each cell whose text has no space, the number of line boxes it takes.
SPLIT_CELLS = """
const out = [];
for (const cell of document.querySelectorAll('td, th')) {
  const text = cell.textContent.trim();
  if (!text || /\\s/.test(text)) continue;
  const r = document.createRange();
  r.selectNodeContents(cell);
  const tops = new Set([...r.getClientRects()].map(q => Math.round(q.top)));
  if (tops.size > 1) out.push(text);
}
return out;
"""


@pytest.mark.parametrize("width", [375, 800])
def test_table_cells_never_split_a_token(archive, width):
    swin = next((archive / "issues" / "60").glob("swin-transformer-*.html"))
    with browser.chromium() as drv:
        browser.set_view(drv, width)
        drv.get(swin.as_uri())
        assert drv.execute_script("return document.querySelectorAll('td').length") > 100
        split = drv.execute_script(SPLIT_CELLS)
        # the page itself never scrolls sideways: the table scrolls in its box
        page_w = drv.execute_script("return document.documentElement.scrollWidth")
    assert split == []
    assert page_w <= width
