"""The HTTP endpoint of matrixd (issue 7): RFC 8058 one-click unsubscribe,
the double opt-in link and the archive in public_dir. The real matrixd runs
in daemon mode (not --once) with http.listen on a free 127.0.0.1 port and
mail going into a Maildir; the links come from the delivered messages and
urllib.request / http.client are the real HTTP clients."""
import email
import email.policy
import hashlib
import hmac
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import MATRIXD, SEED, Env

BASE = "https://news.example.org/matrix/"
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """matrixd in daemon mode; stop() sends SIGTERM and wants exit 0."""

    def __init__(self, env):
        self.env = env
        self.log = env.tmp / "matrixd.log"
        self.errf = open(self.log, "w")
        self.proc = subprocess.Popen([str(MATRIXD), "-c", str(env.conf)],
                                     stdout=subprocess.DEVNULL, stderr=self.errf)
        deadline = time.time() + 60
        while "ready:" not in self.stderr():
            assert self.proc.poll() is None, self.stderr()
            assert time.time() < deadline, self.stderr()
            time.sleep(0.05)

    def stderr(self):
        return self.log.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.errf.close()
        assert rc == 0, self.stderr()


@pytest.fixture
def site(tmp_path):
    """An installation with http.listen on a free port; yields (env, url)
    and a function starting the daemon, stopped (exit 0) at the end."""
    port = free_port()
    env = Env(tmp_path, http_listen=f'"127.0.0.1:{port}"')
    started = []

    def start():
        d = Daemon(env)
        started.append(d)
        return d

    yield env, f"http://127.0.0.1:{port}/", start
    for d in started:
        d.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **kw):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def request(url, data=None, method=None, headers=None):
    """(status, headers, body) for any status, redirects not followed."""
    rq = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with OPENER.open(rq, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw(url, path, method="GET"):
    """A request with the path sent exactly as given (no client clean-up)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def local(url, public):
    assert public.startswith(BASE), public
    return url + public[len(BASE):]


def messages(env, to=None):
    out = []
    for f in sorted((env.tmp / "maildir" / "new").glob("*")):
        m = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        if to is None or m["To"] == to:
            out.append(m)
    return out


def wait_for(pred, what, timeout=60):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def one_click_url(env, to):
    m = wait_for(lambda: messages(env, to), f"mail to {to}")[0]
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    urls = re.findall(r"<(https://[^>]+)>", m["List-Unsubscribe"])
    assert len(urls) == 1, m["List-Unsubscribe"]
    return urls[0]


def confirm_url(env, to):
    def find():
        for m in messages(env, to):
            text = m.get_body(("plain",)).get_content()
            found = re.findall(re.escape(BASE) + r"c/[0-9a-f-]+", text)
            if found:
                return found[0]
        return None

    return wait_for(find, f"confirmation mail to {to}")


def status(env, addr, list_="matrix"):
    show = env.ctl_json("show", addr)
    return [m["status"] for m in show["memberships"] if m["list"] == list_][0]


def events(env, addr):
    return env.ctl_json("show", addr)["events"]


def token(env, purpose, sid, lid, secret=None):
    """A token as lib/token.c makes it (HMAC-SHA256 over "purpose:SID-LID")."""
    if secret is None:
        secret = bytes.fromhex((env.tmp / "state" / "secret").read_text().strip())
    mac = hmac.new(secret, f"{purpose}:{sid}-{lid}".encode(), hashlib.sha256).hexdigest()
    return f"{sid}-{lid}-{mac[:32]}"


def with_issue(env, *subscribers):
    for a in subscribers:
        env.ctl("subscribe", a, check=0)
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)


def assert_security_headers(h):
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    csp = h["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp


# --- one-click unsubscribe ---------------------------------------------------

def test_one_click_post_unsubscribes_and_get_does_not(site):
    env, url, start = site
    with_issue(env, "ann@example.org", "bob@example.org")
    start()
    public = one_click_url(env, "ann@example.org")
    u = local(url, public)

    # a link scanner's GET (and HEAD) changes nothing
    for method in ("GET", "HEAD"):
        st, h, body = request(u, method=method)
        assert st == 200
        assert h["Content-Type"] == "text/html; charset=utf-8"
        assert h["X-Frame-Options"] == "DENY" and h["Cache-Control"] == "no-store"
        assert_security_headers(h)
    st, h, body = request(u)
    page = body.decode()
    assert "退订《Matrix》" in page
    assert re.search(r'<form[^>]*method="post"', page) and "<button" in page
    assert "action=" not in page  # posts back to the URL it was shown at
    assert status(env, "ann@example.org") == "confirmed"

    # RFC 8058: the POST unsubscribes at once and answers 200, no redirect
    st, h, body = request(u, data=ONE_CLICK, headers={"Content-Type": FORM})
    assert st == 200 and "Location" not in h
    assert "你已退订《Matrix》" in body.decode()
    assert status(env, "ann@example.org") == "unsubscribed"
    assert status(env, "bob@example.org") == "confirmed"
    last = events(env, "ann@example.org")[-1]
    assert (last["kind"], last["via"], last["actor"]) == ("unsubscribe", "one-click", "http")
    n = len(events(env, "ann@example.org"))

    # a repeated unsubscribe: 200, nothing changes
    st, h, body = request(u, data=ONE_CLICK, headers={"Content-Type": FORM})
    assert st == 200 and "已经退订" in body.decode()
    assert len(events(env, "ann@example.org")) == n
    st, h, body = request(u)
    assert st == 200 and "已经退订" in body.decode() and "<form" not in body.decode()


def test_button_post_unsubscribes(site):
    """The page's own button posts a form field, not the RFC 8058 body."""
    env, url, start = site
    with_issue(env, "ann@example.org")
    d = start()
    u = local(url, one_click_url(env, "ann@example.org"))
    st, _, body = request(u, data=b"unsubscribe=1", headers={"Content-Type": FORM})
    assert st == 200 and "你已退订" in body.decode()
    assert status(env, "ann@example.org") == "unsubscribed"
    assert events(env, "ann@example.org")[-1]["via"] == "unsubscribe-page"
    # ids at info level, never the address
    log = d.stderr()
    assert re.search(r"http: unsubscribed subscriber=\d+ list=\d+ via=unsubscribe-page", log)
    assert "ann@example.org" not in log.split("ready:")[1]


def test_forged_truncated_and_foreign_tokens(site):
    env, url, start = site
    with_issue(env, "ann@example.org")
    start()
    public = one_click_url(env, "ann@example.org")
    good = public.rsplit("/", 1)[1]
    sid, lid, mac = good.split("-")
    # the test's idea of a token matches the daemon's, so the foreign one
    # below differs only in its key
    assert token(env, "unsubscribe", sid, lid) == good
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    bad = {
        "forged": f"{sid}-{lid}-{flipped}",
        "truncated": good[:-1],
        "cut in half": good[:len(good) // 2],
        "another subscriber": f"{int(sid) + 1}-{lid}-{mac}",
        "foreign key": token(env, "unsubscribe", sid, lid, secret=os.urandom(32)),
        "confirm token": token(env, "confirm", sid, lid),
        "empty": "",
        "junk": "x" * 80,
    }
    before = events(env, "ann@example.org")
    for what, tok in bad.items():
        for data in (None, ONE_CLICK):
            st, h, body = request(url + "u/" + tok, data=data,
                                  headers={"Content-Type": FORM} if data else {})
            assert st == 400, (what, data)
            assert "链接无效" in body.decode(), what
            assert h["Content-Type"] == "text/html; charset=utf-8"
            assert h["X-Frame-Options"] == "DENY"
    st, _, body = request(url + "c/" + bad["forged"], data=b"confirm=1")
    assert st == 400 and "确认链接无效" in body.decode()
    assert status(env, "ann@example.org") == "confirmed"
    assert events(env, "ann@example.org") == before
    # the genuine token still works after all that
    st, _, _ = request(url + "u/" + good, data=ONE_CLICK, headers={"Content-Type": FORM})
    assert st == 200 and status(env, "ann@example.org") == "unsubscribed"


def test_forgotten_subscriber(site):
    """A token naming a subscriber that was erased: 200, nothing to do."""
    env, url, start = site
    with_issue(env, "ann@example.org")
    start()
    u = local(url, one_click_url(env, "ann@example.org"))
    env.ctl("forget", "ann@example.org", check=0)
    for data in (None, ONE_CLICK):
        st, _, body = request(u, data=data, headers={"Content-Type": FORM})
        assert st == 200 and "没有订阅" in body.decode()
    assert env.ctl("show", "ann@example.org").returncode != 0


# --- double opt-in -------------------------------------------------------------

def test_confirm_flow_then_next_issue(site):
    env, url, start = site
    env.ctl("subscribe", "carol@example.org", "--confirm", check=0)
    env.ctl("subscribe", "dave@example.org", "--confirm", check=0)
    start()
    c = local(url, confirm_url(env, "carol@example.org"))
    confirm_url(env, "dave@example.org")

    st, h, body = request(c)
    assert st == 200 and h["X-Frame-Options"] == "DENY"
    page = body.decode()
    assert "确认订阅《Matrix》" in page and re.search(r'<form[^>]*method="post"', page)
    assert status(env, "carol@example.org") == "pending"

    st, h, body = request(c, data=b"confirm=1", headers={"Content-Type": FORM})
    assert st == 200 and "Location" not in h and "订阅成功" in body.decode()
    assert status(env, "carol@example.org") == "confirmed"
    last = events(env, "carol@example.org")[-1]
    assert (last["kind"], last["via"], last["actor"]) == ("confirm", "confirm-link", "http")

    st, _, body = request(c, data=b"confirm=1", headers={"Content-Type": FORM})
    assert st == 200 and "已经确认过" in body.decode()

    # the next issue reaches carol, not dave who never confirmed
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    wait_for(lambda: len(messages(env, "carol@example.org")) == 1 + 15, "the issue to carol")
    time.sleep(0.5)
    assert len(messages(env, "dave@example.org")) == 1  # the confirmation only

    # an old confirmation link does not undo an unsubscribe
    env.ctl("unsubscribe", "carol@example.org", check=0)
    st, _, body = request(c, data=b"confirm=1", headers={"Content-Type": FORM})
    assert st == 200 and "已经退订" in body.decode()
    assert status(env, "carol@example.org") == "unsubscribed"


# --- the archive ---------------------------------------------------------------

def test_feeds_and_pages(site):
    env, url, start = site
    with_issue(env, "ann@example.org")
    start()
    pub = env.tmp / "public"
    wait_for(lambda: (pub / "issues" / "60" / "index.html").exists(), "the archive")
    cases = {
        "feed.xml": ("application/rss+xml; charset=utf-8", pub / "feed.xml"),
        "atom.xml": ("application/atom+xml; charset=utf-8", pub / "atom.xml"),
        "": ("text/html; charset=utf-8", pub / "index.html"),
        "issues/60/": ("text/html; charset=utf-8", pub / "issues" / "60" / "index.html"),
    }
    (pub / "pixel.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (pub / "style.css").write_text("body{}")
    cases["pixel.png"] = ("image/png", pub / "pixel.png")
    cases["style.css"] = ("text/css; charset=utf-8", pub / "style.css")
    for path, (ctype, f) in cases.items():
        st, h, body = request(url + path)
        assert st == 200, path
        assert h["Content-Type"] == ctype, path
        assert body == f.read_bytes(), path
        assert_security_headers(h)
        assert h["ETag"] and h["Last-Modified"], path

    # a directory without its slash: to the public URL with it
    st, h, _ = request(url + "issues/60")
    assert st == 301 and h["Location"] == BASE + "issues/60/"

    # HEAD: the headers, no body
    st, h, body = request(url + "feed.xml", method="HEAD")
    assert st == 200 and body == b""
    assert int(h["Content-Length"]) == (pub / "feed.xml").stat().st_size


def test_conditional_get(site):
    env, url, start = site
    with_issue(env, "ann@example.org")
    start()
    st, h, body = request(url + "feed.xml")
    etag, lastmod = h["ETag"], h["Last-Modified"]
    assert st == 200 and etag.startswith('"') and lastmod.endswith(" GMT")
    st, h2, body = request(url + "feed.xml", headers={"If-None-Match": etag})
    assert st == 304 and body == b"" and h2["ETag"] == etag
    st, _, _ = request(url + "feed.xml", headers={"If-None-Match": f'"x", W/{etag}'})
    assert st == 304
    st, _, _ = request(url + "feed.xml", headers={"If-Modified-Since": lastmod})
    assert st == 304
    st, _, _ = request(url + "atom.xml", headers={"If-None-Match": etag})
    assert st == 200  # another file, another tag
    st, _, _ = request(url + "feed.xml",
                       headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert st == 200
    # a rewritten feed gets a new tag
    feed = env.tmp / "public" / "feed.xml"
    tmp = feed.with_name(".feed.xml.new")
    tmp.write_bytes(feed.read_bytes() + b"\n")
    os.replace(tmp, feed)
    st, h3, _ = request(url + "feed.xml", headers={"If-None-Match": etag})
    assert st == 200 and h3["ETag"] != etag


def test_no_way_out_of_public_dir(site):
    env, url, start = site
    start()
    secret = env.tmp / "secret.txt"
    secret.write_text("TOP SECRET")
    pub = env.tmp / "public"
    (pub / "issues").mkdir(exist_ok=True)
    os.symlink(secret, pub / "link.txt")
    os.symlink(env.tmp, pub / "up")
    (pub / ".hidden").write_text("TOP SECRET")
    paths = [
        "/../secret.txt", "/issues/../../secret.txt", "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt", "/issues/%2e%2e/%2e%2e/secret.txt", "/.%2e/secret.txt",
        "/..%2fsecret.txt", "/..%5csecret.txt", "/%5c..%5csecret.txt", "/a%00b",
        "/feed.xml%00.html", "/link.txt", "/up/secret.txt", "/.hidden", "/%", "/%zz",
        "/./feed.xml",
    ]
    for p in paths:
        st, body = raw(url, p)
        assert st in (400, 404), p
        assert b"TOP SECRET" not in body, p


def test_methods_and_limits(site):
    env, url, start = site
    start()
    for m in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        st, h, _ = request(url + "feed.xml", data=b"x" if m != "DELETE" else None, method=m)
        assert st == 405, m
        assert "GET" in h["Allow"] and "PUT" not in h["Allow"]
    st, h, _ = request(url + "index.html", data=b"x", headers={"Content-Type": FORM})
    assert st == 405 and h["Allow"] == "GET, HEAD"
    st, _, _ = request(url + "u/1-1-" + "0" * 32, data=b"x" * 100_000,
                       headers={"Content-Type": FORM})
    assert st == 413
    st, _, _ = request(url + "x" * 3000)
    assert st == 414
    # the token pages are rate limited per client: a burst, then 429
    codes = [request(url + f"c/{i}-1-" + "0" * 32)[0] for i in range(30)]
    assert codes[0] == 400 and 429 in codes
    first = codes.index(429)
    assert first >= 10 and set(codes[first:]) == {429}
    st, h, _ = request(url + "u/1-1-" + "0" * 32)
    assert st == 429 and int(h["Retry-After"]) > 0
    # the archive is not
    assert request(url + "feed.xml")[0] == 200


def test_listen_disabled_and_port_taken(tmp_path):
    env = Env(tmp_path)  # http.listen = "" in conftest
    d = Daemon(env)
    assert "http: disabled" in d.stderr()
    d.stop()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        env.write_conf(http_listen=f'"127.0.0.1:{port}"')
        p = env.matrixd(timeout=60)
        assert p.returncode == 1
        assert f"http.listen 127.0.0.1:{port}" in p.stderr
    finally:
        s.close()
