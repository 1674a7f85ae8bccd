"""The subscribe form (docs/design.md, "Readers on the web"): GET and POST
site.base_url + "subscribe" against the real matrixd in daemon mode, its
mail going through aiosmtpd (STARTTLS, AUTH) on 127.0.0.1 by the daemon's
one delivery path. The answer to a POST is the same page whatever the
address's state; the mailbox gets what that state needs; limits per client
and per address; bad forms are refused with nothing written."""
import http.client
from html import escape as html_escape
import re
import shutil
import sqlite3
import time
import urllib.parse

import pytest

from conftest import SEED
from test_http import BASE, request, token, wait_for
# (env, url, srv, start): aiosmtpd, http.listen trusting 127.0.0.1 as a
# proxy (each request a client of its own through X-Forwarded-For), and a
# function starting the daemon
from test_web_prefs import site as web  # noqa: F401 (a fixture)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ADDR_RE = re.compile(r"[\w.+-]+@example\.org")


_clients = iter(range(1, 1 << 16))


def post(url, fields, client=None, headers=None, raw=None):
    """POST /subscribe with fields (a dict or a list of pairs), from a
    client address of its own unless client is given ("" = the peer)."""
    h = dict(FORM)
    if client is None:
        n = next(_clients)
        client = f"198.51.{n >> 8}.{n & 255}"
    if client:
        h["X-Forwarded-For"] = client
    h.update(headers or {})
    data = raw if raw is not None else urllib.parse.urlencode(fields).encode()
    st, hd, body = request(url + "subscribe", data=data, headers=h)
    return st, hd, body.decode()


def q(env, sql, *args):
    con = sqlite3.connect(env.db, timeout=30)
    try:
        rows = con.execute(sql, args).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def written(env):
    """What a refused request must not change."""
    return q(env, "SELECT (SELECT count(*) FROM subscribers), (SELECT count(*) FROM"
                  " memberships), (SELECT count(*) FROM events), (SELECT count(*) FROM"
                  " deliveries), (SELECT group_concat(status || mode) FROM memberships)")[0]


def mails(srv, to):
    return [r.message() for r in list(srv.received) if to in r.rcpts]


def kind(m):
    """confirm | already | welcome | article, from what the message is."""
    s = m["Subject"]
    text = m.get_body(("plain",)).get_content()
    if s.startswith("请确认订阅"):
        assert re.search(re.escape(BASE) + r"c/\d+-\d+-[0-9a-f]{16}-[0-9a-f]{16}", text), text
        return "confirm"
    if s.startswith("你已经订阅了"):
        assert "/c/" not in text
        return "already"
    if s.startswith("欢迎订阅"):
        return "welcome"
    return "article"


def kinds(srv, to):
    return [kind(m) for m in mails(srv, to)]


def status(env, addr, list_="matrix"):
    rows = q(env, "SELECT m.status, m.mode FROM memberships m JOIN subscribers s"
                  " ON s.id = m.subscriber_id JOIN lists l ON l.id = m.list_id"
                  " WHERE s.email = ? AND l.name = ?", addr, list_)
    return rows[0] if rows else None


def idle(env):
    """Nothing left to send."""
    return q(env, "SELECT count(*) FROM deliveries WHERE state IN"
                  " ('queued', 'sending', 'deferred')")[0][0] == 0


def page_text(body):
    return re.sub(r"<[^>]+>", " ", body)


# --- the form --------------------------------------------------------------

def test_form_on_every_archive_page_and_the_subscribe_page(web):
    env, url, srv, start = web
    env.ctl("list-create", "matrix-en", "--title", "Matrix English", check=0)
    env.ctl("list-create", "staff", "--title", "Staff only", "--private", check=0)
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    start()
    pub = env.tmp / "public"
    # the article pages are written first, the issue's index next, the list last
    wait_for(lambda: (pub / "issues" / "60" / "index.html").exists() and
             "issues/60/" in (pub / "index.html").read_text(), "the archive")
    pages = [pub / "index.html", pub / "issues" / "60" / "index.html",
             next((pub / "issues" / "60").glob("*.html"))]
    st, h, body = request(url + "subscribe")
    assert st == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    assert h["Cache-Control"] == "no-store" and h["X-Frame-Options"] == "DENY"
    for text in [p.read_text() for p in pages] + [body.decode()]:
        # nothing before the doctype (a template comment closed early by a
        # "}}" inside it printed its rest there, and put browsers in quirks mode)
        assert text.startswith("<!DOCTYPE html>\n"), text[:200]
        forms = re.findall(r'<form class="mx-subscribe" method="post" action="([^"]+)"', text)
        assert forms == [BASE + "subscribe"]
        form = text[text.index('<form class="mx-subscribe"'):]
        form = form[:form.index("</form>")]
        assert re.search(r'<input id="mx-sub-email" type="email" name="email" required', form)
        assert 'name="name"' in form
        assert re.findall(r'name="mode" value="(\w+)"', form) == ["article", "digest"]
        # the public lists, the default one first and checked; never the private one
        assert re.findall(r'name="list" value="([^"]+)"', form) == ["matrix", "matrix-en"]
        assert re.search(r'value="matrix" checked', form)
        assert "staff" not in form and "Staff only" not in form
        assert 'name="website"' in form and 'class="mx-hp"' in text  # the honeypot
        assert "<script" not in text
    assert "script-src" not in h["Content-Security-Policy"]
    assert "form-action 'self'" in h["Content-Security-Policy"]

    # the pages follow the lists: one made public, one made private, a title
    def offered(page):
        return re.findall(r'name="list" value="([^"]+)"', page.read_text())

    env.ctl("list-set", "staff", "--public", check=0)
    env.ctl("list-set", "matrix-en", "--private", check=0)
    wait_for(lambda: all(offered(p) == ["matrix", "staff"] for p in pages), "pages rewritten")
    env.ctl("list-set", "staff", "--title", "Staff 2", check=0)
    wait_for(lambda: all("Staff 2" in p.read_text() for p in pages), "the new title")
    st, _, body = request(url + "subscribe")
    assert re.findall(r'name="list" value="([^"]+)"', body.decode()) == ["matrix", "staff"]
    env.ctl("list-delete", "staff", check=0)
    wait_for(lambda: all(offered(p) == [] and "用邮箱订阅《Matrix》" in p.read_text()
                         for p in pages), "one list again: no choice")


def test_one_list_no_choice_and_no_list_no_form(web):
    env, url, srv, start = web
    start()
    st, _, body = request(url + "subscribe")
    assert st == 200 and 'name="list"' not in body.decode()
    assert "用邮箱订阅《Matrix》" in body.decode()
    # without a list field the one public list is meant
    st, _, body = post(url, {"email": "ann@example.org"})
    assert st == 200 and status(env, "ann@example.org") == ("pending", "article")
    # every list private: no form, and the POST is refused
    env.ctl("list-set", "matrix", "--private", check=0)
    st, _, body = request(url + "subscribe")
    assert st == 200 and "暂不接受网上订阅" in body.decode() and "<form" not in body.decode()
    before = written(env)
    st, _, body = post(url, {"email": "bob@example.org"})
    assert st == 403 and "暂不接受网上订阅" in body
    assert written(env) == before


# --- one answer for every state, the right mail for each --------------------

def test_same_answer_for_every_state_and_the_right_mail(web):
    env, url, srv, start = web
    env.ctl("subscribe", "pending@example.org", "--confirm", check=0)
    env.ctl("subscribe", "confirmed@example.org", "--mode", "digest", check=0)
    env.ctl("subscribe", "left@example.org", check=0)
    env.ctl("unsubscribe", "left@example.org", check=0)
    env.ctl("subscribe", "bounced@example.org", check=0)
    q(env, "UPDATE memberships SET status = 'bounced' WHERE subscriber_id ="
           " (SELECT id FROM subscribers WHERE email = 'bounced@example.org')")
    d = start()
    wait_for(lambda: kinds(srv, "pending@example.org") == ["confirm"], "matrixctl's mail")

    addrs = ["new@example.org", "pending@example.org", "confirmed@example.org",
             "left@example.org", "bounced@example.org"]
    answers = {}
    for a in addrs:
        st, h, body = post(url, {"email": a, "name": "读者", "mode": "article"})
        assert st == 200, (a, body)
        assert h["Content-Type"] == "text/html; charset=utf-8"
        assert h["Cache-Control"] == "no-store"
        assert a in body and "请查收确认邮件" in body
        assert body.startswith("<!DOCTYPE html>\n"), body[:200]
        answers[a] = body.replace(a, "ADDR")
    assert len(set(answers.values())) == 1, "the answer tells the states apart"

    want = {"new@example.org": ["confirm"],
            "pending@example.org": ["confirm", "confirm"],
            "confirmed@example.org": ["already"],
            "left@example.org": ["confirm"],
            "bounced@example.org": ["confirm"]}
    wait_for(lambda: {a: kinds(srv, a) for a in addrs} == want and idle(env),
             "one mail per address")
    time.sleep(1)
    assert {a: kinds(srv, a) for a in addrs} == want
    # what the states are now: nothing confirmed without the mailbox, nothing
    # of a confirmed reader changed (not even the mode), suppressions asked again
    assert status(env, "new@example.org") == ("pending", "article")
    assert status(env, "pending@example.org") == ("pending", "article")
    assert status(env, "confirmed@example.org") == ("confirmed", "digest")
    assert status(env, "left@example.org") == ("pending", "article")
    assert status(env, "bounced@example.org") == ("pending", "article")
    # a new subscriber takes the name; an existing one keeps theirs
    assert q(env, "SELECT name FROM subscribers WHERE email = 'new@example.org'")[0][0] == "读者"
    assert q(env, "SELECT name FROM subscribers WHERE email = 'left@example.org'")[0][0] == ""
    new = mails(srv, "new@example.org")[0]
    assert new["To"] == "读者 <new@example.org>"
    raw = [r.data for r in srv.received if "new@example.org" in r.rcpts][0]
    head = raw.split(b"\r\n\r\n")[0]
    assert max(head) < 0x80  # no 8-bit byte in a header: the name is RFC 2047-encoded
    assert re.search(rb"(?m)^To: =\?UTF-8\?B\?[A-Za-z0-9+/=]+\?= <new@example.org>", head), head
    # the history says where it came from
    ev = env.ctl_json("show", "left@example.org")["events"][-1]
    assert (ev["kind"], ev["via"]) == ("resubscribe", "web")
    ev = env.ctl_json("show", "new@example.org")
    assert ev["memberships"][0]["consent"]["via"] == "web"
    # the "already" notice: the list's one-click link, nothing to confirm, and
    # the reader's preference page (which opens)
    already = mails(srv, "confirmed@example.org")[0]
    assert already["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    prefs = re.findall(re.escape(BASE) + r"(p/[0-9a-f-]+)",
                       already.get_body(("plain",)).get_content())
    assert prefs and request(url + prefs[0])[0] == 200
    # the log has ids, never an address
    log = d.stderr().split("ready:")[1]
    assert not ADDR_RE.search(log), ADDR_RE.findall(log)
    assert re.search(r"http: subscribe subscriber=\d+ \(new\) lists=1 confirmations=1", log)

    # the link of a comeback's mail confirms, and welcomes once
    text = mails(srv, "left@example.org")[0].get_body(("plain",)).get_content()
    c = re.findall(re.escape(BASE) + r"(c/[0-9a-f-]+)", text)[0]
    st, _, body = request(url + c, data=b"confirm=1", headers=FORM)
    assert st == 200 and "订阅成功" in body.decode()
    assert status(env, "left@example.org") == ("confirmed", "article")
    wait_for(lambda: kinds(srv, "left@example.org") == ["confirm", "welcome"], "the welcome")
    for _ in range(2):  # a second click, a reload: no second welcome
        assert request(url + c, data=b"confirm=1", headers=FORM)[0] == 200
        assert request(url + c)[0] == 200
    wait_for(lambda: idle(env), "nothing left to send")
    time.sleep(1)
    assert kinds(srv, "left@example.org") == ["confirm", "welcome"]


def test_welcome_says_what_comes_and_how_to_change_it(web):
    env, url, srv, start = web
    start()
    for a, mode, name in (("art@example.org", "article", "王小明"),
                          ("dig@example.org", "digest", ""),
                          ("tag@example.org", "article", "<b>Ann & \"Bo\"</b>")):
        assert post(url, {"email": a, "mode": mode, "name": name})[0] == 200
        wait_for(lambda: kinds(srv, a) == ["confirm"], "the confirmation")
        text = mails(srv, a)[0].get_body(("plain",)).get_content()
        chtml = mails(srv, a)[0].get_body(("html",)).get_content()
        # a greeting, but not the name: whoever filled in the form typed it
        assert "你好！" in text and "你好！" in chtml
        if name:
            assert name not in text and html_escape(name) not in chtml
        c = re.findall(re.escape(BASE) + r"(c/[0-9a-f-]+)", text)[0]
        assert request(url + c)[0] == 200  # GET: asks, changes nothing, sends nothing
        assert status(env, a) == ("pending", mode)
        assert request(url + c, data=b"confirm=1", headers=FORM)[0] == 200
        wait_for(lambda: kinds(srv, a) == ["confirm", "welcome"], "the welcome")
        w = mails(srv, a)[1]
        assert w["Subject"] == "欢迎订阅《Matrix》"
        assert w["List-Unsubscribe"] and w["List-Unsubscribe-Post"]
        text = w.get_body(("plain",)).get_content()
        html = w.get_body(("html",)).get_content()
        if mode == "article":
            assert "每一篇文章" in text and "改成每期一封摘要" in text
        else:
            assert "摘要邮件" in text and "改成每篇文章一封" in text
        assert "每出一期" in text  # how often
        assert re.search(re.escape(BASE) + r"u/\d+-\d+-[0-9a-f]{16}-[0-9a-f]{16}", text)  # how to leave
        assert re.search(r"订阅设置.*\n" + re.escape(BASE) + r"p/[0-9a-f-]+", text)  # to change
        assert "<script" not in html and a in html
        # by name when there is one, in both parts
        greeting = f"{name}，你好！" if name else "你好！"
        assert greeting in text, text
        assert (html_escape(greeting) if name else "你好！") in html, html
        if not name:
            assert "，你好！" not in text and "，你好！" not in html
        assert "<b>" not in html
    # matrixctl status counts them
    st = env.ctl_json("status")
    assert (st["confirmations"]["sent"], st["welcomes"]["sent"], st["notices"]["sent"]) == \
        (3, 3, 0)
    table = env.ctl("status", check=0).stdout
    assert "(welcome mails)" in table and "(confirmation mails)" in table


# --- limits -------------------------------------------------------------------

def test_forty_posts_from_one_client(web):
    env, url, srv, start = web
    env.ctl("subscribe", "reader@example.org", check=0)
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    start()
    wait_for(lambda: len(mails(srv, "reader@example.org")) == 15 and idle(env), "the issue")
    sid, lid = q(env, "SELECT subscriber_id, list_id FROM memberships")[0]
    one_click = url + "u/" + token(env, "unsubscribe", sid, lid)
    codes = []
    for i in range(40):
        st, h, body = post(url, {"email": f"flood{i}@example.org"}, client="203.0.113.7")
        codes.append(st)
        if st == 429:
            assert int(h["Retry-After"]) > 0 and "请稍后再试" in body
            assert h["Content-Type"] == "text/html; charset=utf-8"
    first = codes.index(429)
    assert 1 <= first <= 10 and set(codes[first:]) == {429}, codes
    # the rest of the endpoint answers meanwhile, the feed and the one-click link
    assert request(url + "feed.xml")[0] == 200
    # another client is not held up by this one
    assert post(url, {"email": "other@example.org"}, client="203.0.113.8")[0] == 200
    st, _, _ = request(one_click, data=b"List-Unsubscribe=One-Click", headers=FORM)
    assert st == 200 and status(env, "reader@example.org")[0] == "unsubscribed"
    wait_for(lambda: idle(env), "the confirmations")
    time.sleep(1)
    flood = [r for r in list(srv.received) if r.rcpts[0].startswith("flood")]
    assert len(flood) == first <= 10  # a handful
    assert q(env, "SELECT count(*) FROM subscribers WHERE email LIKE 'flood%'")[0][0] == first


def test_one_mail_an_hour_per_address(web):
    env, url, srv, start = web
    env.ctl("subscribe", "conf@example.org", check=0)
    start()
    for a in ("pend@example.org", "conf@example.org"):
        for _ in range(3):  # from three different clients
            assert post(url, {"email": a})[0] == 200
    wait_for(lambda: idle(env) and len(mails(srv, "pend@example.org")) == 1 and
             len(mails(srv, "conf@example.org")) == 1, "one mail each")
    time.sleep(1)
    assert kinds(srv, "pend@example.org") == ["confirm"]
    assert kinds(srv, "conf@example.org") == ["already"]
    # an hour later, one more
    q(env, "UPDATE subscribers SET web_mail_at = web_mail_at - 3601")
    for a in ("pend@example.org", "conf@example.org"):
        assert post(url, {"email": a})[0] == 200
    wait_for(lambda: kinds(srv, "pend@example.org") == ["confirm", "confirm"] and
             kinds(srv, "conf@example.org") == ["already", "already"], "a second mail")
    # the domain's letter case is one address (the limit is per mailbox)
    assert post(url, {"email": "pend@EXAMPLE.org"})[0] == 200
    time.sleep(1)
    wait_for(lambda: idle(env), "nothing queued")
    assert len(mails(srv, "pend@example.org")) == 2
    assert env.ctl_json("status")["notices"]["sent"] == 1  # one row, sent twice
    assert '("already subscribed" mails)' in env.ctl("status", check=0).stdout


# --- refusals -----------------------------------------------------------------

def big_post(url, size):
    """A POST announcing size bytes of body; returns the status (the
    server may close before all of it is sent)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        c.putrequest("POST", "/subscribe")
        c.putheader("Content-Type", FORM["Content-Type"])
        c.putheader("Content-Length", str(size))
        c.endheaders()
        chunk = b"email=x%40example.org&name=" + b"a" * 65000
        try:
            sent = 0
            while sent < size:
                c.send(chunk[:size - sent])
                sent += len(chunk)
        except OSError:
            pass
        return c.getresponse().status
    finally:
        c.close()


def test_bad_forms_are_refused_and_write_nothing(web):
    env, url, srv, start = web
    env.ctl("list-create", "staff", "--private", check=0)
    env.ctl("list-create", "matrix-en", check=0)
    d = start()
    before = written(env)
    cases = [
        ("name with LF", {"email": "a@example.org", "name": "Eve\nBcc: x@example.org"}, 400,
         "称呼只能是一行"),
        ("name with CR", {"email": "a@example.org", "name": "Eve\r"}, 400, "称呼只能是一行"),
        ("name with a tab", {"email": "a@example.org", "name": "a\tb"}, 400, "称呼只能是一行"),
        ("name with U+0085", {"email": "a@example.org", "name": "a\u0085b"}, 400, "称呼"),
        ("name too long", {"email": "a@example.org", "name": "长" * 257}, 400, "称呼"),
        ("no email", {"name": "x", "list": "matrix"}, 400, "有效的邮箱地址"),
        ("empty email", {"email": " ", "list": "matrix"}, 400, "有效的邮箱地址"),
        ("not an address", {"email": "a@", "list": "matrix"}, 400, "有效的邮箱地址"),
        ("header in the address", {"email": "a@example.org\r\nBcc: b@example.org",
                                   "list": "matrix"}, 400, "有效的邮箱地址"),
        ("bad mode", {"email": "a@example.org", "mode": "weekly"}, 400, "收信方式"),
        ("private list", {"email": "a@example.org", "list": "staff"}, 400, "不接受网上订阅"),
        ("no such list", {"email": "a@example.org", "list": "nosuch"}, 400, "不接受网上订阅"),
        ("a private list among public ones",
         [("email", "a@example.org"), ("list", "matrix"), ("list", "staff")], 400, "不接受"),
        ("no list of several", {"email": "a@example.org"}, 400, "至少选择一个栏目"),
        ("email twice", [("email", "a@example.org"), ("email", "b@example.org"),
                         ("list", "matrix")], 400, "无法识别"),
    ]
    for what, fields, code, text in cases:
        st, h, body = post(url, fields)
        assert st == code, (what, st, page_text(body))
        assert text in body, (what, page_text(body))
        assert h["Content-Type"] == "text/html; charset=utf-8", what
        assert "什么都没有改变" in body, what
        assert written(env) == before, what
    for what, raw, headers, code in (
            ("bad escape", b"email=a%zz%40example.org&list=matrix", {}, 400),
            ("NUL", b"email=a%00%40example.org&list=matrix", {}, 400),
            ("not UTF-8", b"email=a%40example.org&name=%ff&list=matrix", {}, 400),
            ("not a form", b'{"email": "a@example.org"}', {"Content-Type": "application/json"},
             415),
            ("multipart", b"--x\r\n", {"Content-Type": "multipart/form-data; boundary=x"},
             415)):
        st, _, body = post(url, None, raw=raw, headers=headers)
        assert st == code, (what, st)
        assert written(env) == before, what
    # bodies past the cap: 413 before anything is read
    assert big_post(url, 10 * 1024 * 1024) == 413
    assert big_post(url, 8 * 1024) == 413
    assert written(env) == before
    wait_for(lambda: idle(env), "nothing")
    assert srv.received == []
    # each refusal logged once, with its reason, without the address
    log = d.stderr().split("ready:")[1]
    assert len(re.findall(r"http: subscribe refused \(400\)", log)) == len(cases) + 3
    assert "the name contains a control character" in log
    assert "a list that is not public or does not exist" in log
    assert not ADDR_RE.search(log), ADDR_RE.findall(log)
    # and a good one goes through afterwards, to the lists chosen
    st, _, _ = post(url, [("email", "a@example.org"), ("list", "matrix-en"),
                          ("list", "matrix-en")])
    assert st == 200
    assert status(env, "a@example.org", "matrix-en") == ("pending", "article")
    assert status(env, "a@example.org", "matrix") is None
    wait_for(lambda: kinds(srv, "a@example.org") == ["confirm"], "one confirmation")


def form_fields(body):
    """(email value, name value, checked mode, checked lists) of the
    subscribe form in body, as the browser would show them."""
    import html as _html
    form = body[body.index('<form class="mx-subscribe"'):]
    form = form[:form.index("</form>")]

    def value(id_):
        tag = re.search(r'<input id="%s"[^>]*>' % id_, form).group(0)
        m = re.search(r' value="([^"]*)"', tag)
        return _html.unescape(m.group(1)) if m else None
    modes = re.findall(r'<input type="radio" name="mode" value="(\w+)" checked>', form)
    lists = re.findall(r'<input type="checkbox" name="list" value="([^"]+)" checked>', form)
    return value("mx-sub-email"), value("mx-sub-name"), modes, lists


def test_refused_form_comes_back_filled_in(web):
    env, url, srv, start = web
    env.ctl("list-create", "matrix-en", check=0)
    start()
    # a GET: empty, article, the first list
    st, _, body = request(url + "subscribe")
    assert form_fields(body.decode()) == (None, None, ["article"], ["matrix"])
    cases = [
        ("a blank in the address", [("email", "wang@exa mple.cn"), ("name", "王"),
                                    ("mode", "digest"), ("list", "matrix-en")],
         ("wang@exa mple.cn", "王", ["digest"], ["matrix-en"]), "有效的邮箱地址"),
        ("bad mode", [("email", "a@example.org"), ("name", "小明"), ("mode", "weekly"),
                      ("list", "matrix"), ("list", "matrix-en")],
         ("a@example.org", "小明", ["article"], ["matrix", "matrix-en"]), "收信方式"),
        ("no list", [("email", "a@example.org"), ("mode", "digest")],
         ("a@example.org", None, ["digest"], []), "至少选择一个栏目"),
        ("markup escaped", [("email", '"><script>alert(1)</script>@x'),
                            ("name", "<b>&\"'</b>"), ("list", "matrix")],
         ('"><script>alert(1)</script>@x', "<b>&\"'</b>", ["article"], ["matrix"]),
         "有效的邮箱地址"),
        # a name with a line break is refused and not shown back
        ("name with LF", [("email", "a@example.org"), ("name", "Eve\nBcc: x@example.org"),
                          ("list", "matrix")],
         ("a@example.org", None, ["article"], ["matrix"]), "称呼只能是一行"),
    ]
    for what, fields, want, text in cases:
        st, _, body = post(url, fields)
        assert st == 400, what
        assert text in body, (what, page_text(body))
        assert form_fields(body) == want, what
        assert "<script>" not in body, what
    wait_for(lambda: idle(env), "nothing")
    assert srv.received == []


def test_honeypot(web):
    env, url, srv, start = web
    d = start()
    st, _, real = post(url, {"email": "human@example.org", "website": ""})
    assert st == 200
    before = written(env)
    st, _, bot = post(url, {"email": "bot@example.org", "name": "x", "website": "http://spam"})
    assert st == 200
    assert bot.replace("bot@example.org", "ADDR") == real.replace("human@example.org", "ADDR")
    assert written(env) == before
    wait_for(lambda: idle(env) and kinds(srv, "human@example.org") == ["confirm"], "the mail")
    time.sleep(1)
    assert mails(srv, "bot@example.org") == []
    assert "honeypot" in d.stderr()
