"""matrixd --once against a real SMTP server (aiosmtpd with STARTTLS and
AUTH on 127.0.0.1): what arrives, what is recorded, and what happens when
the relay misbehaves."""
import json
import os
import shutil
import signal
import subprocess
import time

from conftest import DATA, MATRIXD, SEED, Env
from smtpd import PASSWORD, USER, Greeting421, Rule, Server, free_port

LATER = 24 * 3600  # far enough for every backoff


def smtp_env(tmp, srv=None, port=None, **over):
    env = Env(tmp)
    pw = env.tmp / "smtp-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    port = port or srv.port
    ca = srv.ca if srv else None
    conf = dict(smtp_url=f'"smtp://127.0.0.1:{port}"', smtp_tls='"required"',
                smtp_username=f'"{USER}"', smtp_password_file=f'"{pw}"')
    if ca:
        conf["smtp_ca_file"] = f'"{ca}"'
    conf.update(over)
    env.write_conf(**conf)
    return env


def subscribe(env, *addrs, mode="article"):
    for a in addrs:
        env.ctl("subscribe", a, "--mode", mode, check=0)


def drop_issue(env, src=SEED):
    shutil.copy(src, env.tmp / "issues" / src.name)


def once(env, fake_now=None, timeout=300):
    e = {"MATRIXD_FAKE_NOW": str(int(fake_now))} if fake_now else {}
    return env.matrixd("--once", env=e, timeout=timeout)


def test_seed_to_three_subscribers(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org", "bob@example.org")
    subscribe(env, "dig@example.org", mode="digest")
    drop_issue(env)
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert len(server.received) == 31
    for who, n in (("ann@example.org", 15), ("bob@example.org", 15), ("dig@example.org", 1)):
        got = server.to(who)
        assert len(got) == n, who
        for r in got:
            assert r.rcpts == [who]  # one recipient per transaction
            assert r.tls and r.auth
            m = r.message()
            assert m["To"] == who
            for h in ("From", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id",
                      "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Language"):
                assert m[h], h
            assert [p.get_content_type() for p in m.iter_parts()] == \
                ["text/plain", "text/html"]
            # the envelope sender is the VERP address naming this delivery
            assert r.mail_from.startswith("bounces+") and r.mail_from.endswith("@example.org")
    subjects = sorted(r.message()["Subject"] for r in server.to("ann@example.org"))
    assert len(set(subjects)) == 15
    ids = [r.message()["Message-ID"] for r in server.received]
    assert len(set(ids)) == 31
    # a second run sends nothing
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert len(server.received) == 31
    st = env.ctl_json("status")
    issue = st["issues"][0]
    assert (issue["number"], issue["sent"], issue["queued"], issue["failed"]) == (60, 31, 0, 0)


def test_451_once_is_deferred_then_delivered(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org", "grey@example.org")
    server.rules.append(Rule("grey@example.org", "451 4.7.1 Greylisted, try again", times=1))
    drop_issue(env)
    p = once(env)
    assert p.returncode == 75, p.stderr
    assert len(server.to("grey@example.org")) == 14
    assert len(server.to("ann@example.org")) == 15
    issue = env.ctl_json("status")["issues"][0]
    assert issue["deferred"] == 1 and issue["sent"] == 29
    p = once(env)  # not due yet: nothing happens
    assert p.returncode == 75
    assert len(server.to("grey@example.org")) == 14
    p = once(env, fake_now=time.time() + LATER)
    assert p.returncode == 0, p.stderr
    assert len(server.to("grey@example.org")) == 15
    issue = env.ctl_json("status")["issues"][0]
    assert issue["deferred"] == 0 and issue["sent"] == 30


def test_550_fails_for_good(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org", "gone@example.org")
    server.rules.append(Rule("gone@example.org", "550 5.1.1 <gone@example.org>: no such user"))
    drop_issue(env)
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert len(server.to("gone@example.org")) == 0
    assert len(server.to("ann@example.org")) == 15
    issue = env.ctl_json("status")["issues"][0]
    assert issue["failed"] == 15 and issue["sent"] == 15
    # the ledger keeps the server's reply line, not the QUIT that followed
    import sqlite3
    db = sqlite3.connect(env.db)
    replies = {r for (r,) in db.execute(
        "SELECT last_reply FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE s.email = 'gone@example.org' AND last_code = 550")}
    db.close()
    assert replies and all(r.startswith("550 5.1.1 <gone@example.org>") for r in replies)
    text = env.ctl("status", check=0).stdout
    assert "15" in text and "FAILED" in text
    # three hard bounces (bounce_threshold) made the address bounced
    show = env.ctl_json("show", "gone@example.org")
    assert any(m["status"] == "bounced" for m in show["memberships"])


def test_a_refusal_keeps_the_session(tmp_path, server):
    """A refused recipient ends its transaction with RSET, not the session:
    every message of both readers goes over the one connection."""
    env = smtp_env(tmp_path, server, smtp_connections="1")
    subscribe(env, "ann@example.org", "gone@example.org")
    server.rules.append(Rule("gone@example.org", "550 5.1.1 no such user", times=2))
    drop_issue(env)
    before = server.connections  # aiosmtpd's own probe at its start
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert len(server.to("ann@example.org")) == 15
    assert len(server.to("gone@example.org")) == 13  # the third 550 never came
    assert server.connections - before == 1


# English enough for quoted-printable, where a dot that begins a line
# stays a dot (base64 lines never begin with one)
DOTS = """---
title: Matrix NO.71
number: 71
---

# Dots

""" + "Plain English text, long enough to outweigh the Chinese footer. " * 40 + """

.

..

.hidden and . inside

last line
"""


def test_lines_beginning_with_a_dot_arrive_whole(tmp_path, server):
    """RFC 5321 §4.5.2: a line that begins with a dot goes with one more,
    and a line of one dot does not end the message early."""
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    (env.tmp / "issues" / "dots.md").write_text(DOTS)
    p = once(env)
    assert p.returncode == 0, p.stderr
    [got] = server.to("ann@example.org")
    # the text part went as quoted-printable with the dots as they are:
    # otherwise this test would not send any line that begins with one
    assert b"\r\n.\r\n" in got.data and b"\r\n..\r\n" in got.data
    text = got.message().get_body(("plain",)).get_content()
    lines = [line.strip() for line in text.splitlines()]
    for want in (".", "..", ".hidden and . inside", "last line"):
        assert want in lines, (want, text)


def test_421_at_greeting(tmp_path):
    g = Greeting421().start()
    try:
        env = smtp_env(tmp_path, port=g.port, smtp_tls='"auto"')
        subscribe(env, "ann@example.org")
        drop_issue(env)
        p = once(env)
        assert p.returncode == 75, p.stderr
        assert "421" in p.stderr
        st = env.ctl_json("status")["issues"][0]
        assert st["sent"] == 0 and st["failed"] == 0
        assert st["queued"] + st["deferred"] == 15
    finally:
        g.stop()


def test_connection_dropped_after_data(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org", "drop@example.org")
    server.drop_after_data.add("drop@example.org")
    drop_issue(env)
    p = once(env)
    assert p.returncode == 75, p.stderr
    assert server.dropped == ["drop@example.org"]
    st = env.ctl_json("status")["issues"][0]
    assert st["deferred"] >= 1 and st["failed"] == 0
    p = once(env, fake_now=time.time() + LATER)
    assert p.returncode == 0, p.stderr
    assert len(server.to("ann@example.org")) == 15
    got = server.to("drop@example.org")
    assert len(got) == 15
    # The message whose reply was lost arrived twice: once when the server
    # dropped the connection, once on the retry. This is the duplicate the
    # ledger cannot avoid (the server took it, we never heard).
    subj = server.received_dropped[0].message()["Subject"]
    assert sum(1 for r in got if r.message()["Subject"] == subj) == 1
    print("duplicates caused by the dropped reply: 1")


def test_auth_refused(tmp_path):
    (tmp_path / "tls").mkdir()
    srv = Server(tmp_path / "tls", password="another-password").start()
    try:
        env = smtp_env(tmp_path, srv)
        subscribe(env, "ann@example.org")
        drop_issue(env)
        p = once(env)
        assert p.returncode == 75, p.stderr
        assert len(srv.received) == 0
        assert "Login denied" in p.stderr or "535" in p.stderr
        st = env.ctl_json("status")["issues"][0]
        assert st["sent"] == 0 and st["failed"] == 0
        assert srv.logins and not any(ok for _, ok in srv.logins)
    finally:
        srv.stop()


def test_relay_down_at_start(tmp_path):
    (tmp_path / "tls").mkdir()
    port = free_port()
    env = smtp_env(tmp_path, port=port, smtp_tls='"auto"')
    subscribe(env, "ann@example.org", "bob@example.org")
    drop_issue(env)
    p = once(env)
    assert p.returncode == 75, p.stderr
    st = env.ctl_json("status")["issues"][0]
    assert st["sent"] == 0 and st["failed"] == 0 and st["queued"] + st["deferred"] == 30
    srv = Server(tmp_path / "tls", port=port).start()
    try:
        env.write_conf(**{**smtp_conf(env, srv)})
        p = once(env, fake_now=time.time() + LATER)
        assert p.returncode == 0, p.stderr
        assert len(srv.received) == 30
    finally:
        srv.stop()


def smtp_conf(env, srv):
    pw = env.tmp / "smtp-password"
    return dict(smtp_url=f'"smtp://127.0.0.1:{srv.port}"', smtp_tls='"required"',
                smtp_username=f'"{USER}"', smtp_password_file=f'"{pw}"',
                smtp_ca_file=f'"{srv.ca}"')


def test_tls_required_never_sends_in_clear(tmp_path):
    (tmp_path / "tls").mkdir()
    srv = Server(tmp_path / "tls", tls=False, auth=False).start()
    try:
        env = smtp_env(tmp_path, srv, smtp_username='""', smtp_password_file='""')
        subscribe(env, "ann@example.org")
        drop_issue(env)
        p = once(env)
        assert p.returncode == 75, p.stderr
        assert len(srv.received) == 0
        assert "SSL" in p.stderr or "TLS" in p.stderr
    finally:
        srv.stop()


def test_password_file_readable_by_others(tmp_path, server):
    env = smtp_env(tmp_path, server)
    (env.tmp / "smtp-password").chmod(0o644)
    p = once(env)
    assert p.returncode == 1
    assert "chmod 600" in p.stderr
    assert PASSWORD not in p.stderr


def test_crash_mid_send_loses_nothing(tmp_path, server):
    """300 subscribers x 15 articles; kill -9 mid-send; the restart sends
    everything not confirmed sent. Duplicates are bounded by the messages
    in flight: the senders' queue (4 per connection) plus one being sent per
    connection, i.e. 5 x smtp.connections."""
    env = smtp_env(tmp_path, server, smtp_connections=4)
    rows = "email,name,mode\n" + "".join(f"r{i}@example.org,,article\n" for i in range(300))
    (env.tmp / "subs.csv").write_text(rows)
    env.ctl("import", env.tmp / "subs.csv", check=0)
    drop_issue(env)
    proc = subprocess.Popen([str(MATRIXD), "-c", str(env.conf), "--once"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while server.count() < 1000 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = server.count()
    assert 1000 <= before < 4500
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert "in flight when matrixd last stopped" in p.stderr
    pairs = [(r.rcpts[0], r.message()["Subject"]) for r in server.received]
    assert len(set(pairs)) == 4500  # every pair delivered
    duplicates = len(pairs) - 4500
    print(f"crash: killed after {before} messages; duplicates {duplicates} (bound 20)")
    assert duplicates <= 5 * 4
    st = env.ctl_json("status")["issues"][0]
    assert st["sent"] == 4500 and st["sending"] == 0


def test_rate_limit_spreads_the_sending(tmp_path, server):
    """smtp.rate is a token bucket over all connections holding at most one
    second's worth, so whatever the start-up delays (the bucket fills while
    the issue is rendered) the k-th message leaves no earlier than
    (k - rate) / rate seconds after the first leaves. The first leaves after
    matrixd starts, so at the server the k-th arrives no earlier than
    (k - rate) / rate seconds after the start: a lower bound whatever the
    connections' TLS handshakes take (measured from the first arrival, a
    slow first handshake under load made it flaky). Without the limit all 16
    arrive within a fraction of a second of the start."""
    env = smtp_env(tmp_path, server, smtp_rate="4.0", smtp_connections=4)
    subscribe(env, *[f"r{i}@example.org" for i in range(4)])
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / "toc-zh.txt")
    t = time.time()
    p = once(env)
    took = time.time() - t
    assert p.returncode == 0, p.stderr
    assert server.count() == 16
    at = sorted(r.at for r in server.received)
    print(f"16 messages at smtp.rate = 4: {took:.2f} s (first to last {at[-1] - at[0]:.2f} s)")
    for k, t_k in enumerate(at, start=1):
        assert t_k - t >= (k - 4) / 4, (k, t_k - t)


def test_retry_requeues_failed(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org", "moved@example.org")
    # refused twice (below bounce_threshold = 3), then the mailbox works again
    server.rules.append(Rule("moved@example.org", "550 5.2.1 mailbox disabled", times=2))
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / "toc-zh.txt")
    assert once(env).returncode == 0
    st = env.ctl_json("status")["issues"][0]
    assert (st["failed"], st["sent"]) == (2, 6)
    r = env.ctl_json("retry", "--issue", "61")
    assert r["requeued"] == 2
    assert env.ctl_json("status")["issues"][0]["queued"] == 2
    assert once(env).returncode == 0
    st = env.ctl_json("status")["issues"][0]
    assert (st["failed"], st["sent"]) == (0, 8)
    assert len(server.to("moved@example.org")) == 4
    assert env.ctl("retry", "--issue", "99").returncode == 1
    assert env.ctl("retry", "--issue", "x").returncode == 2


def test_send_test(tmp_path, server):
    env = smtp_env(tmp_path, server)
    p = env.ctl("send-test", DATA / "issues" / "toc-zh.txt", "--to", "editor@example.org")
    assert p.returncode == 0, p.stderr
    assert "4 of 4 articles sent to editor@example.org" in p.stdout
    got = server.to("editor@example.org")
    assert len(got) == 4 and all(r.tls and r.auth for r in got)
    # a test mail says so in its subject
    assert {r.message()["Subject"] for r in got} == {
        "[测试] 量子计算：从实验室走向产业", "[测试] \"图学习\"的十年（上）",
        "[测试] 小样本学习，真的有用吗？", "[测试] 科学匠人 | 王小明：做有意义的研究"}
    p = env.ctl("send-test", DATA / "issues" / "toc-zh.txt", "--to", "editor@example.org",
                "--digest")
    assert p.returncode == 0, p.stderr
    assert "the digest sent to editor@example.org" in p.stdout
    got = server.to("editor@example.org")
    assert len(got) == 5
    digest = got[-1].message()
    assert digest["Subject"] == "[测试] Matrix NO.61 · 2022年4 - 6月"
    body = digest.get_body(("plain",)).get_content()
    assert "量子计算：从实验室走向产业" in body and "阅读全文：" in body
    # nothing was recorded: no issue, no subscriber
    assert env.ctl_json("status")["issues"] == []
    server.rules.append(Rule("bad@example.org", "550 5.1.1 no such user"))
    p = env.ctl("send-test", DATA / "issues" / "toc-zh.txt", "--to", "bad@example.org")
    assert p.returncode == 1 and "550 5.1.1" in p.stdout
    p = env.ctl("--json", "send-test", DATA / "issues" / "toc-zh.txt", "--to", "bad@example.org")
    rows = json.loads(p.stdout)
    assert [r["result"] for r in rows] == ["failed"] * 4
    assert rows[0]["reply"].startswith("550 5.1.1")
