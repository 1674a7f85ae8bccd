"""A reader subscribes the way a reader does, in headless Chromium (Debian's
chromium + chromium-driver, driven by python3-selenium; skipped with the
reason where missing): open the archive index, fill in the form, submit;
the confirmation mail arrives at aiosmtpd; open its link, confirm; the
subscriber is confirmed and the welcome mail arrives. A reader opens the
preference link of an article mail and switches to the digest; matrixctl
show says digest. axe-core finds no
violation on the subscribe page, its answer, and the confirmation page,
and the form fits a phone (375 px) and a desktop (800 px), light and dark.

site.base_url is the daemon's own address here, so that the pages' form
posts where the browser's Content-Security-Policy (form-action 'self')
lets it, as it does behind the proxy in production."""
import re
import shutil
import time

import pytest

import browser
from conftest import DATA, SEED
from smtpd import Server
from test_delivery import smtp_env
from test_http import Daemon, free_port, wait_for


@pytest.fixture
def site(tmp_path):
    browser.need_browser()
    (tmp_path / "tls").mkdir()
    srv = Server(tmp_path / "tls").start()
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    env = smtp_env(tmp_path, srv, http_listen=f'"127.0.0.1:{port}"',
                   site_base_url=f'"{base}"')
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    d = None
    try:
        d = Daemon(env)
        pub = env.tmp / "public"
        wait_for(lambda: (pub / "issues" / "60" / "index.html").exists() and
                 (pub / "index.html").exists() and
                 "issues/60/" in (pub / "index.html").read_text(), "the archive")
        yield env, base, srv
    finally:
        if d:
            d.stop()
        srv.stop()


def mails_to(srv, to):
    return [r.message() for r in list(srv.received) if to in r.rcpts]


def text_of(m):
    return m.get_body(("plain",)).get_content()


def h1(drv):
    from selenium.webdriver.common.by import By
    return drv.find_element(By.TAG_NAME, "h1").text


def wait_page(drv, want, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            if want in h1(drv):
                return
        except Exception:  # the page is still loading
            pass
        assert time.time() < deadline, f"no page with {want!r}: {drv.current_url}"
        time.sleep(0.1)


def test_subscribe_confirm_welcome_in_chromium(site):
    from selenium.webdriver.common.by import By
    env, base, srv = site
    reader = "reader@example.org"
    with browser.chromium() as drv:
        drv.get(base)
        form = drv.find_element(By.CSS_SELECTOR, "form.mx-subscribe")
        form.find_element(By.NAME, "email").send_keys(reader)
        form.find_element(By.NAME, "name").send_keys("读者")
        form.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="digest"]').click()
        # a person never sees the honeypot, so never fills it in
        assert not form.find_element(By.NAME, "website").is_displayed()
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_page(drv, "请查收确认邮件")
        assert drv.current_url == base + "subscribe"
        assert reader in drv.page_source

        m = wait_for(lambda: mails_to(srv, reader), "the confirmation mail")[0]
        assert m["Subject"] == "请确认订阅《Matrix》" and m["To"] == "读者 <reader@example.org>"
        link = re.findall(re.escape(base) + r"c/[0-9a-f-]+", text_of(m))[0]
        assert env.ctl_json("show", reader)["memberships"][0]["status"] == "pending"

        drv.get(link)
        wait_page(drv, "确认订阅")
        drv.find_element(By.CSS_SELECTOR, "form.mx-form button[type=submit]").click()
        wait_page(drv, "订阅成功")  # the answer's heading: the confirmed page

        show = env.ctl_json("show", reader)
        assert [(x["status"], x["mode"]) for x in show["memberships"]] == [("confirmed",
                                                                             "digest")]
        assert show["name"] == "读者"
        assert [e["via"] for e in show["events"]][-2:] == ["web", "confirm-link"]
        wait_for(lambda: len(mails_to(srv, reader)) == 2, "the welcome mail")
        welcome = mails_to(srv, reader)[1]
        assert welcome["Subject"] == "欢迎订阅《Matrix》"
        assert "摘要邮件" in text_of(welcome)
        # a reload of the confirmation page sends no second welcome
        drv.refresh()
        time.sleep(2)
        assert len(mails_to(srv, reader)) == 2


def test_axe_and_layout_of_the_subscribe_pages(site):
    from selenium.webdriver.common.by import By
    env, base, srv = site
    env.ctl("subscribe", "pending@example.org", "--confirm", check=0)
    env.ctl("list-create", "matrix-en", "--title", "Matrix English", check=0)
    # the archive pages get the new list's checkbox (matrixctl wakes the daemon)
    wait_for(lambda: all('name="list"' in p.read_text() for p in
                         [env.tmp / "public" / "index.html",
                          env.tmp / "public" / "issues" / "60" / "index.html"]),
             "the pages rewritten with the lists")
    found = {}
    with browser.chromium() as drv:
        found["subscribe"] = browser.axe(drv, base + "subscribe")
        # the answer page, as the browser got it from the form
        drv.get(base + "subscribe")
        drv.find_element(By.NAME, "email").send_keys("new@example.org")
        drv.find_element(By.CSS_SELECTOR, "form.mx-subscribe button").click()
        wait_page(drv, "请查收确认邮件")
        drv.execute_script(browser.AXE.read_text())
        drv.set_script_timeout(120)
        found["answer"] = drv.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document).then(r => done(r.violations.map(v => [v.id, v.help])))")
        m = wait_for(lambda: mails_to(srv, "pending@example.org"), "a confirmation")[0]
        link = re.findall(re.escape(base) + r"c/[0-9a-f-]+", text_of(m))[0]
        found["confirm"] = browser.axe(drv, link)
        found["index"] = browser.axe(drv, base)
        # the form fits the page: nothing scrolls sideways, the fields fit
        for width in (375, 800):
            for dark in (False, True):
                browser.set_view(drv, width, dark)
                for page in (base, base + "subscribe", base + "issues/60/"):
                    drv.get(page)
                    assert drv.execute_script(
                        "return document.documentElement.scrollWidth") <= width, page
                    box = drv.execute_script(
                        "const r = document.querySelector('form.mx-subscribe')"
                        ".getBoundingClientRect(); return [r.left, r.right];")
                    assert box[0] >= 0 and box[1] <= width, (page, width, box)
                    assert len(drv.find_elements(By.NAME, "list")) == 2  # two public lists
    print("axe-core violations:", {k: len(v) for k, v in found.items()})
    assert all(v == [] for v in found.values()), found


def test_preference_link_of_an_article_mail_in_chromium(site):
    """A reader opens the preference link in the footer of an article mail
    and switches to the digest, by clicking: matrixctl show says digest and
    the history via=web (test_web_prefs.py sends the next issue as one
    digest)."""
    from selenium.webdriver.common.by import By
    env, base, srv = site
    reader = "ann@example.org"
    env.ctl("subscribe", reader, check=0)
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues")  # issue 61, 4 articles
    wait_for(lambda: len(mails_to(srv, reader)) == 4, "the four article mails")
    article = mails_to(srv, reader)[0]
    assert article["List-Unsubscribe"]  # an article mail, not a notice
    links = set(re.findall(re.escape(base) + r"p/[0-9a-f-]+", text_of(article)))
    assert len(links) == 1, links
    with browser.chromium() as drv:
        drv.get(links.pop())
        wait_page(drv, "订阅设置")
        assert reader in drv.find_element(By.TAG_NAME, "main").text
        radio = drv.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="digest"]')
        assert not radio.is_selected()
        radio.click()
        drv.find_element(By.CSS_SELECTOR, 'button[name="save"]').click()
        wait_for(lambda: "已保存" in drv.page_source, "the saved page")
        assert drv.find_element(By.CSS_SELECTOR,
                                'input[name="mode"][value="digest"]').is_selected()
    show = env.ctl_json("show", reader)
    assert [(m["status"], m["mode"]) for m in show["memberships"]] == [("confirmed", "digest")]
    ev = show["events"][-1]
    assert (ev["kind"], ev["via"]) == ("mode", "web"), ev
