"""The reader's preference page, /p/TOKEN (docs/nginx.md), against the
real daemon: mail goes out through aiosmtpd (STARTTLS and AUTH on
127.0.0.1), the links come from the delivered messages (parsed with the
strict policy, both parts), and the forms are submitted the way a browser
submits them: the fields the page holds, the radio buttons as checked, and
the name=value of the button pressed.

Every mail's footer links to the page of the subscriber it went to; GET
changes nothing; a POST switches article <-> digest, unsubscribes, comes
back without a second opt-in and subscribes to another public list, each
change in the subscriber's history with via=web; a bad token or a bad form
gets a clear 4xx page and nothing is written; a store another process
holds answers 503 with Retry-After. The unsubscribe page offers the digest
instead and, once unsubscribed, a way back."""
import html.parser
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import DATA, SEED
from smtpd import free_port
from test_delivery import smtp_env
from test_http import BASE, FORM, ONE_CLICK, Daemon, assert_security_headers, request, token

ZH = DATA / "issues" / "toc-zh.txt"  # issue 61, four articles
PREFS = re.compile(re.escape(BASE) + r"p/[0-9a-f-]+")
SUBSCRIBE_URL = BASE + "subscribe"


@pytest.fixture
def site(tmp_path, server):
    """(env, url, server, start): an installation sending through aiosmtpd
    (conftest.py's server) with http.listen on a free port; start() runs
    the daemon, stopped (exit 0) at the end."""
    srv = server
    port = free_port()
    # the tests speak for many readers: each its own client (X-Forwarded-For
    # from the trusted local proxy), or the per-client limit answers 429
    env = smtp_env(tmp_path, srv, http_listen=f'"127.0.0.1:{port}"',
                   http_trusted_proxies='"127.0.0.1"')
    started = []

    def start():
        d = Daemon(env)
        started.append(d)
        return d

    try:
        yield env, f"http://127.0.0.1:{port}/", srv, start
    finally:
        for d in started:
            d.stop()


def wait_for(pred, what, timeout=120):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def mails(srv, to):
    return [r.message() for r in list(srv.received) if to in r.rcpts]


def wait_mails(srv, to, n):
    return wait_for(lambda: len(mails(srv, to)) >= n and mails(srv, to), f"{n} mails to {to}")


def bodies(m):
    """The text and the HTML of a message: multipart/alternative with
    exactly text/plain then text/html, both UTF-8."""
    assert m.get_content_type() == "multipart/alternative"
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for p in parts:
        assert p.get_content_charset() == "utf-8"
    return parts[0].get_content(), parts[1].get_content()


def hrefs(html_text):
    class P(html.parser.HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.found = []

        def handle_starttag(self, tag, attrs):
            if tag == "a":
                self.found.append(dict(attrs).get("href", ""))

    p = P()
    p.feed(html_text)
    return p.found


def prefs_link(m):
    """The one preference link of a mail: the same in its text and as a
    link in its HTML, and not in any header (List-Unsubscribe stays the
    one-click URL and the mailto)."""
    text, html_ = bodies(m)
    in_text = set(PREFS.findall(text))
    in_html = {h for h in hrefs(html_) if PREFS.fullmatch(h)}
    assert len(in_text) == 1, text
    assert in_html == in_text, (in_html, in_text)
    lu = m["List-Unsubscribe"]
    if lu is not None:
        lu = " ".join(str(lu).split())
        assert "/p/" not in lu
        assert re.fullmatch(r"<https://[^>]+/u/[0-9a-f-]+>, <mailto:[^>]+>", lu), lu
    return in_text.pop()


def local(url, public):
    assert public.startswith(BASE), public
    return url + public[len(BASE):]


CLIENTS = iter(range(1, 1 << 24))


def client():
    """The header of a reader of our own, never seen before."""
    n = next(CLIENTS)
    return {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}


def get(u):
    st, h, body = request(u, headers=client())
    return st, h, body.decode()


def post(u, data):
    return request(u, data=data, headers=dict(client(), **{"Content-Type": FORM}))


class Forms(html.parser.HTMLParser):
    """The POST forms of a page: their inputs and buttons."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.forms, self.cur, self.btn = [], None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.cur = {"method": (a.get("method") or "get").lower(),
                        "action": a.get("action"), "inputs": [], "buttons": []}
            self.forms.append(self.cur)
        elif self.cur is not None and tag == "input":
            self.cur["inputs"].append(a)
        elif self.cur is not None and tag == "button":
            self.btn = dict(a, text="")
            self.cur["buttons"].append(self.btn)

    def handle_data(self, d):
        if self.btn is not None:
            self.btn["text"] += d

    def handle_endtag(self, tag):
        if tag == "form":
            self.cur = None
        elif tag == "button":
            self.btn = None


def form_with(page, pred):
    """The one POST form of page holding a button for which pred holds,
    and that button."""
    found = [(f, b) for f in Forms(page).forms for b in f["buttons"] if pred(b)]
    assert len(found) == 1, (found, page)
    f, b = found[0]
    assert f["method"] == "post" and not f["action"], f  # posts back to the same URL
    assert b.get("type", "submit") == "submit"
    return f, b


def radios(form, name):
    """{value: checked} of the radio group name."""
    return {i["value"]: "checked" in i for i in form["inputs"]
            if i.get("type") == "radio" and i.get("name") == name}


def submit(u, page, pred, choose=None):
    """Submits the form of page whose button pred picks, as a browser
    does, after checking the radio buttons choose names ({name: value});
    returns (status, headers, body)."""
    f, b = form_with(page, pred)
    choose = dict(choose or {})
    fields = []
    for i in f["inputs"]:
        t, name = i.get("type", "text"), i.get("name")
        if not name:
            continue
        if t == "radio":
            if name in choose:
                assert choose[name] in radios(f, name), (name, radios(f, name))
                if i["value"] == choose[name]:
                    fields.append((name, i["value"]))
            elif "checked" in i:
                fields.append((name, i["value"]))
        elif t == "checkbox":
            if "checked" in i:
                fields.append((name, i.get("value", "on")))
        else:
            fields.append((name, i.get("value", "")))
    if b.get("name"):
        fields.append((b["name"], b.get("value", "")))
    st, h, body = post(u, urllib.parse.urlencode(fields).encode())
    return st, h, body.decode()


def button(name, value=None):
    return lambda b: b.get("name") == name and (value is None or b.get("value") == value)


def show(env, addr):
    return env.ctl_json("show", addr)


def membership(env, addr, list_="matrix"):
    ms = [m for m in show(env, addr)["memberships"] if m["list"] == list_]
    return ms[0] if ms else None


def snapshot(env):
    """Everything a request could write: subscribers, memberships, events
    and deliveries, row by row."""
    con = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("subscribers", "memberships", "events", "deliveries", "lists")}
    finally:
        con.close()


def open_rows(env):
    con = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM deliveries WHERE state IN "
                           "('queued', 'sending', 'deferred')").fetchone()[0]
    finally:
        con.close()


def delivered(env, srv, start, issue=ZH, **subs):
    """Subscribes {addr: mode}, drops issue, starts the daemon and waits
    until every delivery has ended; returns the daemon."""
    for addr, mode in subs.items():
        env.ctl("subscribe", addr, "--mode", mode, check=0)
    shutil.copy(issue, env.tmp / "issues" / issue.name)
    d = start()
    n = sum(4 if mode == "article" else 1 for mode in subs.values())
    wait_for(lambda: srv.count() >= n and open_rows(env) == 0, f"{n} mails sent")
    return d


def page_of(env, srv, url, addr):
    """(the local URL, the page) of addr's preference link, from its mail."""
    u = local(url, prefs_link(mails(srv, addr)[0]))
    st, h, page = get(u)
    assert st == 200, page
    return u, page


# --- the link in every mail ----------------------------------------------------

def test_every_mail_links_to_its_readers_page(site):
    env, url, srv, start = site
    env.ctl("subscribe", "pen@example.org", "--confirm", check=0)
    for addr, mode in (("ann@example.org", "article"), ("dig@example.org", "digest")):
        env.ctl("subscribe", addr, "--mode", mode, check=0)
    shutil.copy(ZH, env.tmp / "issues" / ZH.name)
    start()
    wait_for(lambda: srv.count() >= 6 and open_rows(env) == 0, "6 mails sent")
    links = {}
    for addr, n in (("ann@example.org", 4), ("dig@example.org", 1), ("pen@example.org", 1)):
        got = mails(srv, addr)
        assert len(got) == n, addr
        found = {prefs_link(m) for m in got}
        # one page per reader: every mail to them links to the same one
        assert len(found) == 1, found
        links[addr] = found.pop()
    # the confirmation mail (pen is pending) links to it too
    assert "确认" in mails(srv, "pen@example.org")[0]["Subject"]
    assert len(set(links.values())) == 3
    # the welcome mail, once pen confirms ...
    text, _ = bodies(mails(srv, "pen@example.org")[0])
    c = re.findall(re.escape(BASE) + r"c/[0-9a-f-]+", text)[0]
    assert post(local(url, c), b"confirm=1")[0] == 200
    welcome = wait_mails(srv, "pen@example.org", 2)[1]
    assert welcome["Subject"].startswith("欢迎"), welcome["Subject"]
    assert prefs_link(welcome) == links["pen@example.org"]
    # ... and the "already subscribed" mail of the subscribe form
    st, _, _ = post(url + "subscribe", urllib.parse.urlencode(
        {"email": "ann@example.org", "mode": "article"}).encode())
    assert st == 200
    already = wait_mails(srv, "ann@example.org", 5)[4]
    assert "已经订阅" in already["Subject"], already["Subject"]
    assert prefs_link(already) == links["ann@example.org"]
    for addr, link in links.items():
        st, h, page = get(local(url, link))
        assert st == 200, page
        assert h["Content-Type"] == "text/html; charset=utf-8"
        assert h["Cache-Control"] == "no-store"
        assert_security_headers(h)
        assert addr in page
        assert all(other not in page for other in links if other != addr)
    print("preference links checked in", {a: len(mails(srv, a)) for a in links}, "mails")


def test_article_mail_says_how_to_subscribe(site):
    """Forwarded to someone else: the article mail says where to subscribe."""
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article", "dig@example.org": "digest"})
    for m in mails(srv, "ann@example.org"):
        text, html_ = bodies(m)
        assert SUBSCRIBE_URL in re.findall(re.escape(BASE) + r"[^\s<>]*", text)
        assert SUBSCRIBE_URL in hrefs(html_)
        line = [ln for ln in text.splitlines() if SUBSCRIBE_URL in ln][0]
        assert "转发" in line
    # the digest is for subscribers: no such line
    text, _ = bodies(mails(srv, "dig@example.org")[0])
    assert SUBSCRIBE_URL not in text


# --- GET ---------------------------------------------------------------------

def test_get_and_head_change_nothing(site):
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article"})
    u, page = page_of(env, srv, url, "ann@example.org")
    before = snapshot(env)
    for _ in range(3):
        assert get(u)[0] == 200
        assert request(u, method="HEAD", headers=client())[0] == 200
    # with the query a scanner might add, too
    assert get(u + "?utm_source=x")[0] == 200
    assert snapshot(env) == before
    # the page shows the list, its status and its mode: one list, one field "mode"
    f, _ = form_with(page, button("save"))
    assert radios(f, "mode") == {"article": True, "digest": False}
    assert "Matrix" in page and "已订阅" in page


# --- POST: the reader's changes ------------------------------------------------

def test_switch_to_digest_then_the_next_issue_is_a_digest(site):
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article", "bob@example.org": "article"})
    u, page = page_of(env, srv, url, "ann@example.org")
    st, h, page = submit(u, page, button("save"), {"mode": "digest"})
    assert st == 200, page
    assert_security_headers(h)
    assert membership(env, "ann@example.org")["mode"] == "digest"
    assert membership(env, "ann@example.org")["status"] == "confirmed"
    assert membership(env, "bob@example.org")["mode"] == "article"
    ev = show(env, "ann@example.org")["events"][-1]
    assert (ev["kind"], ev["via"], ev["list"]) == ("mode", "web", "matrix"), ev
    assert "article -> digest" in ev["detail"]
    # the answer shows the new state
    f, _ = form_with(page, button("save"))
    assert radios(f, "mode") == {"article": False, "digest": True}
    # saving again changes nothing and records nothing
    n = len(show(env, "ann@example.org")["events"])
    assert submit(u, page, button("save"))[0] == 200
    assert len(show(env, "ann@example.org")["events"]) == n
    # the next issue: one digest for ann, every article for bob
    before = len(mails(srv, "ann@example.org"))
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    wait_for(lambda: len(mails(srv, "bob@example.org")) == 4 + 15 and open_rows(env) == 0,
             "issue 60 sent")
    new = mails(srv, "ann@example.org")[before:]
    assert len(new) == 1 and "NO.60" in new[0]["Subject"], [m["Subject"] for m in new]
    # and back to articles
    _, page = page_of(env, srv, url, "ann@example.org")
    assert submit(u, page, button("save"), {"mode": "article"})[0] == 200
    assert membership(env, "ann@example.org")["mode"] == "article"


def test_unsubscribe_and_come_back_without_a_second_opt_in(site):
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article"})
    sent = srv.count()
    u, page = page_of(env, srv, url, "ann@example.org")
    st, _, page = submit(u, page, button("unsubscribe", "matrix"))
    assert st == 200, page
    assert membership(env, "ann@example.org")["status"] == "unsubscribed"
    ev = show(env, "ann@example.org")["events"][-1]
    assert (ev["kind"], ev["via"]) == ("unsubscribe", "web"), ev
    assert "已退订" in page
    # the page offers the way back; it takes no confirmation mail
    st, _, page = submit(u, page, button("subscribe", "matrix"))
    assert st == 200, page
    m = membership(env, "ann@example.org")
    assert m["status"] == "confirmed" and m["mode"] == "article"
    assert m["consent"]["via"] == "web"
    ev = show(env, "ann@example.org")["events"][-1]
    assert (ev["kind"], ev["via"]) == ("resubscribe", "web"), ev
    time.sleep(1)  # a confirmation mail would have been queued at once
    assert open_rows(env) == 0 and srv.count() == sent
    con = sqlite3.connect(f"file:{env.db}?mode=ro", uri=True)
    assert con.execute("SELECT count(*) FROM deliveries WHERE issue_id <= 0").fetchone()[0] == 0
    con.close()


def test_subscribe_to_another_public_list(site):
    env, url, srv, start = site
    env.ctl("list-create", "weekly", "--title", "矩阵周刊", check=0)
    env.ctl("list-create", "staff", "--title", "编辑部内刊", "--private", check=0)
    delivered(env, srv, start, **{"ann@example.org": "article"})
    u, page = page_of(env, srv, url, "ann@example.org")
    # a private list is never offered, and a form naming it is refused
    assert "编辑部内刊" not in page and "staff" not in page
    before = snapshot(env)
    for body in (b"subscribe=staff", b"mode.staff=digest&subscribe=staff"):
        st, _, refused = post(u, body)
        assert st == 400 and 'role="alert"' in refused.decode()
    assert snapshot(env) == before
    # several lists: one mode field per list (mode.LIST), a form per list
    f, _ = form_with(page, button("save", "matrix"))
    assert radios(f, "mode.matrix") == {"article": True, "digest": False}
    f, _ = form_with(page, button("subscribe", "weekly"))
    assert set(radios(f, "mode.weekly")) == {"article", "digest"}
    assert not [b for g in Forms(page).forms for b in g["buttons"]
                if b.get("name") in ("save", "unsubscribe") and b.get("value") == "weekly"]
    assert "矩阵周刊" in page
    assert membership(env, "ann@example.org", "weekly") is None
    st, _, page = submit(u, page, button("subscribe", "weekly"), {"mode.weekly": "digest"})
    assert st == 200, page
    m = membership(env, "ann@example.org", "weekly")
    assert (m["status"], m["mode"]) == ("confirmed", "digest"), m
    assert m["consent"]["via"] == "web"
    ev = show(env, "ann@example.org")["events"][-1]
    assert (ev["kind"], ev["via"], ev["list"]) == ("subscribe", "web", "weekly"), ev
    assert membership(env, "ann@example.org")["status"] == "confirmed"
    # now both are the reader's: either can be left alone
    st, _, page = submit(u, page, button("unsubscribe", "weekly"))
    assert st == 200
    assert membership(env, "ann@example.org", "weekly")["status"] == "unsubscribed"
    assert membership(env, "ann@example.org")["status"] == "confirmed"


# --- what is refused -----------------------------------------------------------

def test_bad_tokens_get_a_4xx_page_and_nothing_is_written(site):
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article"})
    link = prefs_link(mails(srv, "ann@example.org")[0])
    tok = link.rsplit("/", 1)[1]
    sid = show(env, "ann@example.org")["id"]
    assert tok.startswith(f"{sid}-")
    secret = bytes.fromhex((env.tmp / "state" / "secret").read_text().strip())
    import hashlib
    import hmac

    def made(purpose, ids, key=secret, digits=32, split=False):
        mac = hmac.new(key, f"{purpose}:{ids}".encode(), hashlib.sha256).hexdigest()[:digits]
        return f"{ids}-" + (f"{mac[:16]}-{mac[16:]}" if split else mac)

    def prefs(ids, key=secret):
        return made("prefs", ids, key=key, split=True)

    assert prefs(str(sid)) == tok  # the shape token.h describes: SUB-MAC-MAC
    flipped = tok[:-1] + ("0" if tok[-1] != "0" else "1")
    bad = {
        "forged": flipped,
        "truncated": tok[:-4],
        "extended": tok + "0",
        "other subscriber's ids": f"{sid + 1}-{tok.split('-', 1)[1]}",
        "unsubscribe token": token(env, "unsubscribe", sid, 1),
        "confirm token": token(env, "confirm", sid, 1),
        "verp token": made("verp", "1", digits=16),
        "prefs shape, unsubscribe MAC": made("unsubscribe", str(sid), split=True),
        "prefs MAC, not split": made("prefs", str(sid)),
        "other installation's key": prefs(str(sid), key=bytes(32)),
        "empty": "",
        "junk": "x" * 40,
    }
    before = snapshot(env)
    body = urllib.parse.urlencode([("unsubscribe", "matrix")]).encode()
    for what, t in bad.items():
        for data in (None, body, ONE_CLICK):
            st, h, page = post(url + "p/" + t, data) if data else request(
                url + "p/" + t, headers=client())
            page = page.decode()
            assert 400 <= st < 500, (what, st)
            assert h["Content-Type"] == "text/html; charset=utf-8", what
            assert "ann@example.org" not in page
            assert "链接无效" in page, (what, page)
    # a good token for a subscriber forgotten since: 404, a page saying so
    env.ctl("subscribe", "gone@example.org", check=0)
    gone = prefs(str(show(env, "gone@example.org")["id"]))
    env.ctl("forget", "gone@example.org", check=0)
    before = snapshot(env)
    for data in (None, body):
        st, h, page = post(url + "p/" + gone, data) if data else request(
            url + "p/" + gone, headers=client())
        assert st == 404, st
        assert h["Content-Type"] == "text/html; charset=utf-8"
    assert snapshot(env) == before
    # and the good token still works
    assert get(local(url, link))[0] == 200


def test_bad_forms_get_a_4xx_page_and_nothing_is_written(site):
    env, url, srv, start = site
    env.ctl("list-create", "weekly", check=0)
    delivered(env, srv, start, **{"ann@example.org": "article"})
    u, page = page_of(env, srv, url, "ann@example.org")
    before = snapshot(env)
    bad = {
        "bad escape": b"mode.matrix=%zz&save=1",
        "not UTF-8": b"mode.matrix=%ff&save=1",
        "bad mode": b"mode.matrix=weekly&save=1",
        "mode of which list": b"mode=digest&save=1",  # two lists shown: mode.LIST
        "no such list": b"unsubscribe=nosuch",
        "no such list's mode": b"mode.nosuch=digest&save=1",
        "both ways": b"subscribe=weekly&unsubscribe=weekly",
        "two modes": b"mode.matrix=digest&mode.matrix=article&save=1",
        "unsubscribe what was never subscribed": b"unsubscribe=weekly",
        "nothing asked": b"",
        "only a button": b"save=1",
        "a NUL": b"mode.matrix=digest%00&save=1",
    }
    for what, data in bad.items():
        st, h, body = post(u, data)
        body = body.decode()
        assert st == 400, (what, st)
        assert h["Content-Type"] == "text/html; charset=utf-8", what
        # a page that says so, and still shows the reader's settings
        assert "ann@example.org" in body, what
        assert 'role="alert"' in body, (what, body)
    # a 10 MB body: 413 on its Content-Length, before any of it is read
    assert big_post(u, 10 << 20) == 413
    assert snapshot(env) == before
    assert get(u)[0] == 200


def big_post(u, n):
    """The status of a POST announcing an n-byte body, the body unsent."""
    host, port = u.split("//")[1].split("/")[0].split(":")
    path = "/" + u.split("//")[1].split("/", 1)[1]
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {FORM}\r\n"
                  f"Content-Length: {n}\r\n\r\nmode=digest&x=".encode())
        head = s.recv(4096).decode(errors="replace")
    return int(head.split()[1])


HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_a_busy_store_answers_503_with_retry_after(site):
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article"})
    u, page = page_of(env, srv, url, "ann@example.org")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(env.db), "6"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = time.time()
        st, h, body = submit(u, page, button("save"), {"mode": "digest"})
        took = time.time() - t
        print(f"preference POST while the store is locked: {st} in {took:.3f} s")
        assert st == 503, body
        assert int(h["Retry-After"]) > 0
        assert took < 5
        # reading goes on: the page still shows
        assert get(u)[0] == 200
    finally:
        assert holder.wait(timeout=30) == 0
    assert membership(env, "ann@example.org")["mode"] == "article"
    # as a client honouring Retry-After would
    wait_for(lambda: submit(u, page, button("save"), {"mode": "digest"})[0] == 200,
             "the POST taken once the lock is gone", timeout=30)
    assert membership(env, "ann@example.org")["mode"] == "digest"


# --- the unsubscribe page ---------------------------------------------------------

def one_click(m):
    urls = re.findall(r"<(https://[^>]+)>", m["List-Unsubscribe"])
    assert len(urls) == 1
    return urls[0]


def test_unsubscribe_page_offers_the_digest_and_a_way_back(site):
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article"})
    u = local(url, one_click(mails(srv, "ann@example.org")[0]))
    before = snapshot(env)
    st, _, page = get(u)
    assert st == 200 and snapshot(env) == before
    # "switch to the digest instead", a POST form of its own
    st, _, page = submit(u, page, lambda b: "摘要" in b["text"])
    assert st == 200, page
    # each answer's heading says what happened, not "unsubscribe" for all
    assert "<h1>改收摘要</h1>" in page, page
    m = membership(env, "ann@example.org")
    assert (m["status"], m["mode"]) == ("confirmed", "digest"), m
    ev = show(env, "ann@example.org")["events"][-1]
    assert ev["kind"] == "mode" and "article -> digest" in ev["detail"], ev
    # a digest reader is not offered the digest again, still the unsubscribe
    st, _, page = get(u)
    assert not [b for f in Forms(page).forms for b in f["buttons"] if "摘要" in b["text"]]
    st, _, page = submit(u, page, lambda b: "退订" in b["text"])
    assert st == 200 and "<h1>退订《Matrix》</h1>" in page, page
    assert membership(env, "ann@example.org")["status"] == "unsubscribed"
    ev = show(env, "ann@example.org")["events"][-1]
    assert (ev["kind"], ev["via"]) == ("unsubscribe", "unsubscribe-page")
    # after unsubscribing: a way back, without a second opt-in, and the
    # preference page linked
    assert any(PREFS.fullmatch(h) for h in hrefs(page)), page
    st, _, page = submit(u, page, lambda b: "重新订阅" in b["text"])
    assert st == 200, page
    assert "<h1>重新订阅《Matrix》</h1>" in page, page
    m = membership(env, "ann@example.org")
    assert (m["status"], m["mode"]) == ("confirmed", "digest"), m
    ev = show(env, "ann@example.org")["events"][-1]
    assert (ev["kind"], ev["via"]) == ("resubscribe", "unsubscribe-page"), ev
    # the one-click POST of a mail provider is what it always was
    st, _, _ = post(u, ONE_CLICK)
    assert st == 200
    assert membership(env, "ann@example.org")["status"] == "unsubscribed"
    assert show(env, "ann@example.org")["events"][-1]["via"] == "one-click"
    # and the page of an address already unsubscribed offers the way back too
    st, _, page = get(u)
    form_with(page, lambda b: "重新订阅" in b["text"])


def test_one_client_is_limited_like_the_other_links(site):
    """/p/ shares the per-client limit of /u/ and /c/: a token cannot be
    guessed at speed, and one client cannot keep the store busy."""
    env, url, srv, start = site
    delivered(env, srv, start, **{"ann@example.org": "article"})
    u = local(url, prefs_link(mails(srv, "ann@example.org")[0]))
    me = client()
    codes = [request(u, headers=me)[0] for _ in range(30)]
    print("30 GETs of one client in a row:", codes.count(200), "answered,",
          codes.count(429), "refused")
    assert codes[0] == 200 and codes.count(429) >= 5
    st, h, _ = request(u, headers=me)
    assert st == 429 and int(h["Retry-After"]) > 0
    # another reader is not held up
    assert get(u)[0] == 200
