"""Failure modes found in review: a relay that refuses us is not the
subscribers' fault, results are never lost, a bounce counts once, ids are
never reused, a forged complaint changes nothing, one daemon per store."""
import re
import shutil
import signal
import sqlite3
import subprocess
import time

from conftest import DATA, MATRIXD, SEED
from smtpd import Rule, free_port
from test_delivery import LATER, once, smtp_env, subscribe

ZH = DATA / "issues" / "toc-zh.txt"


def test_relay_refusing_mail_from_is_not_a_bounce(tmp_path, server):
    """The relay wants AUTH and we have no username: 530 to MAIL FROM. That
    is the admin's problem: nothing fails, nobody is bounced, exit 75."""
    env = smtp_env(tmp_path, server, smtp_username='""', smtp_password_file='""')
    subscribe(env, "ann@example.org", "bob@example.org")
    shutil.copy(ZH, env.tmp / "issues" / ZH.name)
    p = once(env)
    assert p.returncode == 75, p.stderr
    assert "530" in p.stderr
    st = env.ctl_json("status")["issues"][0]
    assert st["failed"] == 0 and st["sent"] == 0
    for who in ("ann@example.org", "bob@example.org"):
        show = env.ctl_json("show", who)
        assert show["bounce_score"] == 0
        assert show["memberships"][0]["status"] == "confirmed"


def test_message_refused_after_data_is_not_a_bounce(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    server.rules.append(Rule("ann@example.org", "554 5.6.0 message content rejected",
                             stage="data"))
    shutil.copy(ZH, env.tmp / "issues" / ZH.name)
    p = once(env)
    assert p.returncode == 0, p.stderr
    st = env.ctl_json("status")["issues"][0]
    assert st["failed"] == 4
    show = env.ctl_json("show", "ann@example.org")
    assert show["bounce_score"] == 0 and show["memberships"][0]["status"] == "confirmed"


def test_cancelled_rows_do_not_stall_once(tmp_path, server):
    """Deliveries queued for people who unsubscribed meanwhile are cancelled
    at claim time; --once goes on to the others and finishes."""
    env = smtp_env(tmp_path, server, port=free_port())  # relay down: only queue
    subscribe(env, *[f"u{i}@example.org" for i in range(6)])
    shutil.copy(ZH, env.tmp / "issues" / ZH.name)
    assert once(env).returncode == 75
    for i in range(5):
        env.ctl("unsubscribe", f"u{i}@example.org", check=0)
    env.write_conf(smtp_url=f'"smtp://127.0.0.1:{server.port}"', smtp_tls='"required"',
                   smtp_ca_file=f'"{server.ca}"', smtp_username='"matrix"',
                   smtp_password_file=f'"{env.tmp / "smtp-password"}"')
    t = time.time()
    p = once(env, fake_now=time.time() + LATER, timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.time() - t < 20
    assert {r.rcpts[0] for r in server.received} == {"u5@example.org"}
    db = sqlite3.connect(env.db)
    cancelled = db.execute("SELECT count(*) FROM deliveries WHERE last_reply = "
                           "'cancelled: unsubscribed'").fetchone()[0]
    db.close()
    assert cancelled == 20


def test_same_dsn_twice_counts_once(env):
    env.ctl("subscribe", "gone@example.org", check=0)
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    assert env.matrixd("--once").returncode == 0
    mail = sorted((env.tmp / "maildir" / "new").iterdir())[0].read_text()
    verp = re.search(r"Return-Path: <([^>]+)>", mail).group(1)
    dsn = re.sub(r"bounces\+\d+-[0-9a-f]{16}@example\.org", verp,
                 (DATA / "bounces" / "postfix-dsn-hard.eml").read_text())
    for _ in range(3):
        assert env.ctl("bounce", input=dsn).returncode == 0
    show = env.ctl_json("show", "gone@example.org")
    assert show["bounce_score"] == 1
    assert show["memberships"][0]["status"] == "confirmed"


def test_ids_are_never_reused_after_forget(env):
    env.ctl("subscribe", "old@example.org", check=0)
    shutil.copy(ZH, env.tmp / "issues" / ZH.name)
    assert env.matrixd("--once").returncode == 0
    mail = sorted((env.tmp / "maildir" / "new").iterdir())[0].read_text()
    mailto = re.search(r"<mailto:(unsubscribe\+[^>]+)>", mail).group(1)
    old_id = env.ctl_json("show", "old@example.org")["id"]
    env.ctl("forget", "old@example.org", check=0)
    env.ctl("subscribe", "new@example.org", check=0)
    assert env.ctl_json("show", "new@example.org")["id"] != old_id
    # the forgotten person's old unsubscribe address names nobody now
    msg = f"From: old@example.org\nTo: {mailto}\nSubject: unsubscribe\n\nplease\n"
    assert env.ctl("bounce", input=msg).returncode == 0
    assert env.ctl_json("show", "new@example.org")["memberships"][0]["status"] == "confirmed"


def test_forged_complaint_changes_nothing(env):
    env.ctl("subscribe", "victim@example.org", check=0)
    arf = (DATA / "bounces" / "arf-abuse.eml").read_text()
    arf = re.sub(r"[\w.]+@example\.net", "victim@example.org", arf)
    arf = re.sub(r"bounces\+\d+-[0-9a-f]{16}@example\.org", "someone@example.org", arf)
    p = env.ctl("bounce", input=arf)
    assert p.returncode == 0 and "dropped" in p.stdout
    assert env.ctl_json("show", "victim@example.org")["memberships"][0]["status"] == \
        "confirmed"


def sending_ids(db_path):
    db = sqlite3.connect(db_path)
    ids = {r[0] for r in db.execute("SELECT id FROM deliveries WHERE state = 'sending'")}
    db.close()
    return ids


def test_one_daemon_per_store(tmp_path, server):
    """A --once from cron while the service sends through a slow relay: it
    finds the lock and exits 75 without touching the service's rows (a
    recovery before the lock put the in-flight rows back to queued, and the
    service sent them twice)."""
    server.delay = 1.5
    env = smtp_env(tmp_path, server, smtp_connections=1)
    subs = [f"u{i}@example.org" for i in range(3)]
    subscribe(env, *subs)
    log = open(env.tmp / "matrixd.log", "w")
    d = subprocess.Popen([str(MATRIXD), "-c", str(env.conf)], stderr=log,
                         stdout=subprocess.DEVNULL)
    try:
        shutil.copy(ZH, env.tmp / "issues" / ZH.name)
        deadline = time.time() + 30
        while server.count() < 1 and time.time() < deadline:
            time.sleep(0.05)
        assert server.count() >= 1, "the service sent nothing"
        before = sending_ids(env.db)
        assert len(before) >= 2, before  # 5 jobs per connection are claimed
        p = env.matrixd("--once")
        after = sending_ids(env.db)
        assert p.returncode == 75, p.stderr
        assert f"another matrixd (pid {d.pid})" in p.stderr
        assert "in flight" not in p.stderr
        db = sqlite3.connect(env.db)
        requeued = [i for i in before if db.execute(
            "SELECT state FROM deliveries WHERE id = ?", (i,)).fetchone()[0] == "queued"]
        db.close()
        assert requeued == [], f"the second matrixd put {requeued} back to queued"
        st = env.ctl_json("status")["daemon"]
        assert st["running"] and st["pid"] == d.pid
        total = len(subs) * 4
        deadline = time.time() + 90
        while server.count() < total and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # a duplicate would come right behind
    finally:
        d.send_signal(signal.SIGTERM)
        rc = d.wait(timeout=30)
        log.close()
    assert rc == 0
    ids = [m.message()["Message-ID"] for m in server.received]
    dup = {i: ids.count(i) for i in ids if ids.count(i) > 1}
    assert dup == {}, f"sent twice: {dup}"
    assert len(ids) == total
