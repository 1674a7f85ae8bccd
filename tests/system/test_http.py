"""The HTTP endpoint of matrixd: RFC 8058 one-click unsubscribe,
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
    """A token as lib/token.c makes it (HMAC-SHA256 over "purpose:SID-LID",
    128 bits in two halves)."""
    if secret is None:
        secret = bytes.fromhex((env.tmp / "state" / "secret").read_text().strip())
    mac = hmac.new(secret, f"{purpose}:{sid}-{lid}".encode(), hashlib.sha256).hexdigest()
    return f"{sid}-{lid}-{mac[:16]}-{mac[16:32]}"


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
    page = body.decode()
    assert st == 200 and "已经退订" in page
    # no second unsubscribe button; only the way back (test_web_prefs.py)
    assert 'name="unsubscribe"' not in page and 'name="resubscribe"' in page


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
    sid, lid, mac1, mac2 = good.split("-")
    mac = f"{mac1}-{mac2}"
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


def test_links_mailed_before_the_mac_halves_still_work(site):
    """Unsubscribe links in mail sent before the MAC came in two halves
    (one run of 32 digits) go on working."""
    env, url, start = site
    with_issue(env, "ann@example.org")
    start()
    sid, lid, mac1, mac2 = one_click_url(env, "ann@example.org").rsplit("/", 1)[1].split("-")
    st, _, _ = request(url + f"u/{sid}-{lid}-{mac1}{mac2}", data=ONE_CLICK,
                       headers={"Content-Type": FORM})
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
    assert st == 200 and "Location" not in h and "<h1>订阅成功</h1>" in body.decode()
    assert status(env, "carol@example.org") == "confirmed"
    last = events(env, "carol@example.org")[-1]
    assert (last["kind"], last["via"], last["actor"]) == ("confirm", "confirm-link", "http")

    st, _, body = request(c, data=b"confirm=1", headers={"Content-Type": FORM})
    assert st == 200 and "已经确认过" in body.decode()

    # the next issue reaches carol (after her confirmation and her welcome),
    # not dave who never confirmed
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    wait_for(lambda: len(messages(env, "carol@example.org")) == 2 + 15, "the issue to carol")
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


# --- hardening: framing, one header set, forwarded clients, slow clients -----
#
# Raw sockets: the requests below are ones no well-behaved client library
# would send, and the answers are read byte for byte.

def raw_exchange(url, data, timeout=10, src=None):
    """Sends data on a fresh connection (from source address src), reads
    until the server closes or timeout; returns (status, headers, body)
    with header names lowercased, status None when nothing came back."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    s = socket.socket()
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect((host, int(port)))
    out = b""
    try:
        s.sendall(data)
        while not complete(out):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return parse_response(out)


def complete(out):
    """A whole response with a Content-Length has arrived."""
    head, sep, body = out.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(sep) and m is not None and len(body) >= int(m.group(1))


def parse_response(out):
    if not out:
        return None, {}, b""
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return status, headers, body


def assert_header_set(h, what):
    """The headers every answer carries, whoever produced it."""
    one = {k: v[0] for k, v in h.items()}
    assert "content-type" in one, (what, h)
    assert one.get("x-content-type-options") == "nosniff", (what, h)
    assert one.get("referrer-policy") == "no-referrer", (what, h)
    assert one.get("x-frame-options") == "DENY", (what, h)
    assert "default-src 'none'" in one.get("content-security-policy", ""), (what, h)
    for k, v in h.items():
        assert len(v) == 1 or k == "set-cookie", (what, k, v)


def one_click_path(env, to):
    return "/" + one_click_url(env, to)[len(BASE):]


def test_ambiguous_framing_is_refused(site):
    """Requests two parsers could read two ways are refused with 400 before
    anything is done: a request smuggled past a proxy must not unsubscribe."""
    env, url, start = site
    with_issue(env, "ann@example.org")
    start()
    path = one_click_path(env, "ann@example.org")
    body = ONE_CLICK
    post = f"POST {path} HTTP/1.1\r\nHost: news.example.org\r\n" \
           f"Content-Type: {FORM}\r\n"
    cases = {
        "two Content-Length": (post + f"Content-Length: {len(body)}\r\n"
                               "Content-Length: 0\r\n\r\n").encode() + body,
        "the same Content-Length twice": (post + f"Content-Length: {len(body)}\r\n"
                                          f"Content-Length: {len(body)}\r\n\r\n").encode() + body,
        "Content-Length and chunked": (post + f"Content-Length: {len(body)}\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\n").encode()
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
        "chunked and Content-Length": (post + "Transfer-Encoding: chunked\r\n"
                                       f"Content-Length: {len(body)}\r\n\r\n").encode()
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
        "space before the colon": (post + f"Content-Length : {len(body)}\r\n\r\n").encode() + body,
        "Transfer-Encoding in HTTP/1.0": (post.replace("HTTP/1.1", "HTTP/1.0")
                                          + "Transfer-Encoding: chunked\r\n\r\n").encode()
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
        "no Host in HTTP/1.1": (f"POST {path} HTTP/1.1\r\nContent-Type: {FORM}\r\n"
                                f"Content-Length: {len(body)}\r\n\r\n").encode() + body,
        "two Host": (post + "Host: evil.example\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n").encode() + body,
        "a Host with a space": (post.replace("news.example.org", "news.example.org x")
                                + f"Content-Length: {len(body)}\r\n\r\n").encode() + body,
    }
    for what, data in cases.items():
        st, h, _ = raw_exchange(url, data)
        assert st == 400, (what, st)
        assert_header_set(h, what)
        assert h["connection"] == ["close"], what
        assert status(env, "ann@example.org") == "confirmed", what
    # a target or a version the next parser could read otherwise
    for what, data, code in (
            ("a raw space in the target", f"POST {path} x HTTP/1.1\r\nHost: n\r\n"
             f"Content-Length: {len(body)}\r\n\r\n".encode() + body, 400),
            ("HTTP/1.5", f"POST {path} HTTP/1.5\r\nHost: n\r\n"
             f"Content-Length: {len(body)}\r\n\r\n".encode() + body, 505)):
        st, h, _ = raw_exchange(url, data)
        assert st == code, (what, st)
        assert_header_set(h, what)
        assert status(env, "ann@example.org") == "confirmed", what
    # a coding we do not know is not read as something else
    st, h, _ = raw_exchange(url, (post + "Transfer-Encoding: gzip, chunked\r\n\r\n").encode()
                            + b"0\r\n\r\n")
    assert st == 501 and status(env, "ann@example.org") == "confirmed"
    assert_header_set(h, "gzip")
    # HTTP/1.0 without Host is fine, and the well-formed POST still works
    st, _, _ = raw_exchange(url, b"GET /feed.xml HTTP/1.0\r\n\r\n")
    assert st == 200
    st, h, _ = raw_exchange(url, (post + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    assert st == 200 and status(env, "ann@example.org") == "unsubscribed"
    assert_header_set(h, "one-click")


def test_limits_answer_with_the_header_set(site):
    """The refusals libmicrohttpd would otherwise make itself, without a
    Content-Type or our security headers, come from matrixd."""
    env, url, start = site
    start()
    host = "Host: news.example.org\r\n"
    cases = {
        414: f"GET /{'x' * 20000} HTTP/1.1\r\n{host}\r\n",
        431: f"GET /feed.xml HTTP/1.1\r\n{host}" + "".join(
            f"X-Pad-{i}: {'y' * 100}\r\n" for i in range(200)) + "\r\n",
        413: f"POST /u/1-1-{'0' * 32} HTTP/1.1\r\n{host}Content-Length: 100000\r\n\r\n",
        405: f"PUT /feed.xml HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n",
        404: f"GET /nothing-here HTTP/1.1\r\n{host}\r\n",
        400: f"GET /%zz HTTP/1.1\r\n{host}\r\n",
    }
    for code, req in cases.items():
        st, h, body = raw_exchange(url, req.encode())
        assert st == code, (code, st, body[:200])
        assert_header_set(h, code)
        assert h["content-type"] == ["text/plain; charset=utf-8"], (code, h)
    st, h, _ = raw_exchange(url, f"GET /issues HTTP/1.1\r\n{host}\r\n".encode())
    assert st in (301, 404)
    assert_header_set(h, st)


def bad_token_path(i):
    return f"/c/{i}-1-" + "0" * 32


def limited_after(url, headers_of, n=30, src=None):
    """Sends n requests for invalid confirm tokens with the headers
    headers_of(i); returns the index of the first 429, or None."""
    for i in range(n):
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers_of(i).items())
        req = f"GET {bad_token_path(i)} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
        st, h, _ = raw_exchange(url, req, src=src)
        assert st in (400, 429), (i, req, st)
        if st == 429:
            assert_header_set(h, 429)
            return i
    return None


def test_forwarding_headers_only_from_trusted_proxies(site):
    env, url, start = site
    port = url.rsplit(":", 1)[1].rstrip("/")
    d = start()
    # no trusted proxy: whatever a loopback peer claims, it is one client
    spoof = lambda i: {"X-Real-IP": f"203.0.113.{i}", "X-Forwarded-For": f"198.51.100.{i}"}
    first = limited_after(url, spoof)
    assert first is not None and first >= 10
    assert "X-Forwarded-For" in d.stderr() and "trusted_proxies" in d.stderr()
    d.stop()

    env.write_conf(http_listen=f'"127.0.0.1:{port}"', http_trusted_proxies='"127.0.0.1, ::1"')
    start()
    # the rightmost hop that is not a trusted proxy is the client ...
    assert limited_after(url, lambda i: {"X-Forwarded-For": f"203.0.113.{i}"}) is None
    assert limited_after(url, lambda i: {"X-Forwarded-For": f"192.0.2.{i}, 127.0.0.1"}) is None
    # ... and what the client itself put before it changes nothing
    first = limited_after(url, lambda i: {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.250"})
    assert first is not None and first >= 10
    # X-Real-IP is not a forwarding header we read
    first = limited_after(url, lambda i: {"X-Real-IP": f"192.0.2.{100 + i}"})
    assert first is not None
    # a peer that is not a trusted proxy is its own client, whatever it says
    first = limited_after(url, lambda i: {"X-Forwarded-For": f"192.0.2.{i}"}, src="127.0.0.2")
    assert first is not None and first >= 10


def test_slow_clients_do_not_hold_every_slot(site):
    """Slow-loris: 264 connections from 8 addresses, each sending one more
    byte of its header every second. A request must arrive in whole within
    a bounded time, and a client that is not slow is served meanwhile."""
    env, url, start = site
    start()
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1].rstrip("/"))
    slow = []
    for a in range(8):
        for _ in range(33):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + a}", 0))
            s.setblocking(False)
            try:
                s.connect((host, port))
            except BlockingIOError:
                pass
            slow.append(s)
    t0 = time.time()
    open_ = set(range(len(slow)))
    started = set()

    def drip():
        for i in list(open_):
            try:
                slow[i].send(b"a" if i in started else b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                started.add(i)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
            try:
                if slow[i].recv(4096) == b"":
                    open_.discard(i)
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)

    served = []
    try:
        while time.time() - t0 < 14:
            drip()
            if 2 < time.time() - t0 < 12 and len(served) < 3:
                t = time.time()
                st, _, _ = raw_exchange(url, b"GET /feed.xml HTTP/1.1\r\nHost: x\r\n\r\n",
                                        timeout=5, src="127.0.0.20")
                served.append((st, time.time() - t))
            time.sleep(1)
        # a fast client was answered at once while the slow ones hung on
        assert len(served) == 3 and all(st == 200 and dt < 2 for st, dt in served), served
        # and after 14 s no slow connection is left open, dripping or not
        drip()
        assert not open_, f"{len(open_)} slow connections still open after 14 s"
    finally:
        for s in slow:
            s.close()
