"""The web archive of the seed issue and of tests/data/issues/export-62.txt,
export-65.txt and export-66.txt in headless Chromium: axe-core
(tests/data/axe/) finds no accessibility violation on any page, and no table
cell splits a number or a word, on a phone (375 px) or a desktop (800 px)."""
import pytest

import browser
from conftest import DATA, Env, SEED


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    browser.need_browser()
    tmp = tmp_path_factory.mktemp("axe")
    env = Env(tmp)
    for issue in (SEED, *(DATA / "issues" / f"export-{n}.txt" for n in (62, 65, 66))):
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


# --- the pages of the HTTP endpoint ------------------------------------------------

@pytest.fixture
def web(tmp_path_factory):
    """matrixd serving http.listen, with ann (confirmed, two public lists
    shown on her preference page) and pen (pending): yields a dict of the
    local URLs of their links, from the mail they got. One daemon per test:
    a test's dozen requests to the token pages share the per-client burst
    (daemon/http.c, RATE_BURST 20), and two tests in a row on a fast
    machine went over it (429, a plain-text answer, not the page)."""
    import re
    import shutil
    import time

    from test_http import BASE, Daemon, free_port, messages

    browser.need_browser()
    tmp = tmp_path_factory.mktemp("axe-web")
    port = free_port()
    env = Env(tmp, http_listen=f'"127.0.0.1:{port}"')
    env.ctl("list-create", "weekly", "--title", "矩阵周刊", check=0)
    env.ctl("subscribe", "ann@example.org", check=0)
    env.ctl("subscribe", "pen@example.org", "--confirm", check=0)
    shutil.copy(DATA / "issues" / "toc-zh.txt", tmp / "issues")
    d = Daemon(env)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while len(messages(env, "ann@example.org")) < 4 or not messages(env, "pen@example.org"):
            assert time.time() < deadline, d.stderr()
            time.sleep(0.1)

        def link(to, pattern):
            m = messages(env, to)[0]
            text = m.get_body(("plain",)).get_content()
            return re.findall(re.escape(BASE) + pattern, text)[0].replace(BASE, url)

        ann = messages(env, "ann@example.org")[0]
        yield {
            "prefs": link("ann@example.org", r"p/[0-9a-f-]+"),
            "pending prefs": link("pen@example.org", r"p/[0-9a-f-]+"),
            "confirm": link("pen@example.org", r"c/[0-9a-f-]+"),
            "unsubscribe": re.findall(r"<(https://[^>]+/u/[^>]+)>",
                                      ann["List-Unsubscribe"])[0].replace(BASE, url),
            "invalid": url + "p/1-0123",
        }
    finally:
        d.stop()


def click(drv, text):
    browser.press(drv, drv.find_element("xpath", f"//button[contains(., '{text}')]"))


def save(drv):
    browser.press(drv, drv.find_element("css selector", "button[name=save][value=matrix]"))


@pytest.mark.parametrize("width,dark", [(800, False), (375, True)])
def test_axe_reader_pages(web, width, dark):
    """The preference, unsubscribe and confirm pages in each of their
    states, as a reader reaches them (GET, then the buttons): no violation,
    on a phone in the dark and on a desktop in the light. Every state the
    test goes through it leaves again."""
    found, seen = {}, []

    def check(name):
        seen.append(name)
        v = browser.audit(drv)
        if v:
            found[name] = v

    with browser.chromium() as drv:
        browser.set_view(drv, width, dark)
        drv.get(web["prefs"])
        check("preferences")
        drv.find_element("css selector", "input[name='mode.matrix'][value=digest]").click()
        save(drv)
        check("preferences: saved")
        drv.find_element("css selector", "input[name='mode.matrix'][value=article]").click()
        save(drv)
        click(drv, "退订《Matrix》")
        check("preferences: unsubscribed")
        click(drv, "重新订阅")
        # a form the page never makes: 400, the page with its alert
        drv.execute_script("document.querySelector(\"input[name='mode.matrix']\").value = 'x'")
        save(drv)
        assert "role=\"alert\"" in drv.page_source
        check("preferences: refused")
        drv.get(web["pending prefs"])
        check("preferences: pending")
        drv.get(web["unsubscribe"])
        check("unsubscribe")
        click(drv, "确认退订")
        check("unsubscribe: done")
        click(drv, "重新订阅")
        check("unsubscribe: back")
        drv.get(web["confirm"])
        check("confirm")
        drv.get(web["invalid"])
        check("invalid link")
    n = sum(len(v) for v in found.values())
    print(f"axe-core violations on {len(seen)} reader pages at {width} px "
          f"{'dark' if dark else 'light'}: {n}")
    assert found == {}
