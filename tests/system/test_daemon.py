"""matrixd as a daemon: systemd notification, the settle time, corrections,
reload, shutdown, an idle loop, bad issues, and the shipped unit's
hardening."""
import email
import email.policy
import os
import pathlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time

import feedparser
import pytest

from conftest import DATA, MATRIXD, ROOT, SEED, Env
from smtpd import Rule
from test_delivery import smtp_env, subscribe


class Notify:
    """A NOTIFY_SOCKET of our own: collects what sd_notify sends."""

    def __init__(self, tmp):
        self.path = str(pathlib.Path(tempfile.mkdtemp(dir="/tmp")) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().splitlines())

    def wait(self, pred, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if any(pred(m) for m in list(self.messages)):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


class Daemon:
    def __init__(self, env, notify=None, extra_env=None):
        e = dict(os.environ)
        e.pop("JOURNAL_STREAM", None)
        if notify:
            e["NOTIFY_SOCKET"] = notify.path
        e.update(extra_env or {})
        self.log = open(env.tmp / "matrixd.log", "w+")
        self.p = subprocess.Popen([str(MATRIXD), "-c", str(env.conf)], stderr=self.log,
                                  stdout=subprocess.DEVNULL, env=e)
        self.env = env

    def stderr(self):
        self.log.flush()
        return (self.env.tmp / "matrixd.log").read_text()

    def wait_log(self, needle, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if needle in self.stderr():
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def term(self, timeout=15):
        self.p.send_signal(signal.SIGTERM)
        t = time.time()
        rc = self.p.wait(timeout=timeout)
        return rc, time.time() - t

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def wait_for(pred, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_notify_ready_status_and_delivery(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    n = Notify(tmp_path)
    d = Daemon(env, n, {"WATCHDOG_USEC": "1000000"})  # as systemd sets it (WatchdogSec=1)
    try:
        assert n.wait(lambda m: m == "READY=1"), n.messages
        assert n.wait(lambda m: m == "WATCHDOG=1", 5), n.messages
        # an issue moved into the directory (rename, as editors' tools do)
        staging = env.tmp / "staging.txt"
        shutil.copy(SEED, staging)
        os.rename(staging, env.tmp / "issues" / "matrix-060.txt")
        assert wait_for(lambda: server.count() == 15), server.count()
        # the issue by number and title
        assert n.wait(lambda m: m.startswith("STATUS=issue 60 (Matrix NO.60): ") and "sent" in m)
        ready = n.messages.count("READY=1")
        d.p.send_signal(signal.SIGHUP)
        assert n.wait(lambda m: m == "RELOADING=1")
        assert wait_for(lambda: n.messages.count("READY=1") == ready + 1)
        watchdogs = n.messages.count("WATCHDOG=1")
        assert wait_for(lambda: n.messages.count("WATCHDOG=1") > watchdogs + 1, 5)
        rc, took = d.term()
        assert rc == 0, d.stderr()
        assert "STOPPING=1" in n.messages
        status = [m for m in n.messages if m.startswith("STATUS=issue 60 (Matrix NO.60): ")]
        assert any(re.search(r"\d+/15 sent", s) for s in status), status
    finally:
        d.kill()
        n.close()


def test_issue_written_in_chunks_is_sent_once_complete(tmp_path, server):
    env = smtp_env(tmp_path, server, issue_settle_seconds=2)
    subscribe(env, "ann@example.org")
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        data = SEED.read_bytes()
        third = len(data) // 3
        target = env.tmp / "issues" / "matrix-060.txt"
        with open(target, "wb") as f:
            for i in range(3):
                f.write(data[i * third: (i + 1) * third if i < 2 else len(data)])
                f.flush()
                if i < 2:
                    time.sleep(1.0)
        last_write = time.time()
        assert wait_for(lambda: server.count() == 15, 30), d.stderr()
        time.sleep(1.0)
        assert server.count() == 15  # once
        # nothing went out before the file had been quiet for the settle time
        first = min(r.at for r in server.received)
        assert first >= last_write + 1.9, (first - last_write)
        subjects = {r.message()["Subject"] for r in server.received}
        assert len(subjects) == 15  # complete: all fifteen articles
        assert d.stderr().count("issue=60 published") == 1
        # no error from parsing a half-written file (the parser's warnings
        # about the complete one are logged as one line and are no error)
        errors = [line for line in d.stderr().splitlines()
                  if re.search(r"matrix-060\.txt:\d+:", line) and " warning" not in line]
        assert errors == [], d.stderr()
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_correction_updates_feed_and_sends_nothing(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    src = DATA / "issues" / "toc-zh.txt"
    target = env.tmp / "issues" / "toc-zh.txt"
    shutil.copy(src, target)
    d = Daemon(env)
    try:
        assert wait_for(lambda: server.count() == 4), d.stderr()
        feed = env.tmp / "public" / "atom.xml"
        before = feedparser.parse(str(feed))
        assert "第一篇文章的第一句话在这里" in before.entries[0].content[0].value
        text = target.read_text().replace("第一篇文章的第一句话在这里", "更正后的第一句话")
        tmp = env.tmp / "issues" / ".toc-zh.txt.swp"
        tmp.write_text(text)
        os.rename(tmp, target)
        assert d.wait_log("corrected"), d.stderr()
        assert wait_for(lambda: "更正后的第一句话" in feed.read_text())
        after = feedparser.parse(str(feed))
        assert "更正后的第一句话" in after.entries[0].content[0].value
        page = (env.tmp / "public" / "issues" / "61").glob("*.html")
        assert any("更正后的第一句话" in p.read_text() for p in page)
        time.sleep(1.5)
        assert server.count() == 4  # nothing sent again
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_sighup_with_broken_config_keeps_the_old_one(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        good = env.conf.read_text()
        env.conf.write_text(good + "smtp = { connections = \"many\"; };\n")
        d.p.send_signal(signal.SIGHUP)
        line = good.count("\n") + 1
        assert d.wait_log(f"{env.conf}:{line}:"), d.stderr()
        assert "reload refused" in d.stderr()
        assert d.p.poll() is None
        shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / "toc-zh.txt")
        assert wait_for(lambda: server.count() == 4), d.stderr()
        # a good config reloads
        env.conf.write_text(good)
        d.p.send_signal(signal.SIGHUP)
        assert d.wait_log("reloaded")
        assert d.term()[0] == 0
    finally:
        d.kill()


def sigterm_mid_send(env, server, readers, after):
    """readers article readers imported, the seed issue dropped in, SIGTERM
    once the relay has after messages; the stop must be prompt and clean,
    and a --once then sends the rest. Asserts every (reader, article)
    arrived exactly once (a clean stop records every outcome); returns the
    count at the stop and the seconds the stop took."""
    rows = "email,name,mode\n" + "".join(f"t{i}@example.org,,article\n" for i in range(readers))
    (env.tmp / "subs.csv").write_text(rows)
    env.ctl("import", env.tmp / "subs.csv", check=0)
    server.delay = 0.01
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        shutil.copy(SEED, env.tmp / "issues" / SEED.name)
        assert wait_for(lambda: server.count() >= after, 60), d.stderr()
        rc, took = d.term()
        assert rc == 0, d.stderr()
        assert took < 10, took
        stopped_at = server.count()
        assert stopped_at < readers * 15
        p = env.matrixd("--once")
        assert p.returncode == 0, p.stderr
    finally:
        d.kill()
    pairs = [(r.rcpts[0], r.message()["Subject"]) for r in server.received]
    assert len(set(pairs)) == readers * 15
    dups = len(pairs) - len(set(pairs))
    print(f"SIGTERM after {stopped_at} messages in {took:.2f} s; duplicates {dups}")
    assert dups == 0  # a clean stop records every outcome
    return stopped_at, took


def test_sigterm_during_big_send_then_restart_loses_nothing(tmp_path, server):
    sigterm_mid_send(smtp_env(tmp_path, server, smtp_connections=4), server, 134, 300)


def cpu_ticks(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_idle_daemon_sleeps(tmp_path, server):
    from smtpd import free_port
    env = smtp_env(tmp_path, server, http_listen=f'"127.0.0.1:{free_port()}"')
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        time.sleep(1)
        hz = os.sysconf("SC_CLK_TCK")
        before = cpu_ticks(d.p.pid)
        time.sleep(10)
        used_ms = (cpu_ticks(d.p.pid) - before) * 1000 / hz
        print(f"idle CPU over 10 s: {used_ms:.0f} ms")
        assert used_ms < 20
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_bad_issue_is_reported_and_retried(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        bad = env.tmp / "issues" / "bad.txt"
        shutil.copy(DATA / "issues" / "bad" / "toc-missing.txt", bad)
        shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / "toc-zh.txt")
        assert d.wait_log(f"{bad}:10:"), d.stderr()
        assert wait_for(lambda: server.count() == 4), d.stderr()  # others go on
        st = env.ctl_json("status")
        assert st["daemon"]["running"]
        assert any(e["error"].startswith(f"{bad}:10:") for e in st["errors"])
        text = env.ctl("status", check=0).stdout
        assert "running" in text and f"{bad}:10:" in text
        # fixed: picked up again, the error goes away
        bad.write_text(bad.read_text() + "\n这篇文章在正文里找不到\n\n第二篇的正文。\n")
        assert d.wait_log("issue=73 published"), d.stderr()
        assert env.ctl_json("status")["errors"] == []
        assert d.term()[0] == 0
        assert not env.ctl_json("status")["daemon"]["running"]
    finally:
        d.kill()


def test_ignored_files(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    for name in (".hidden.txt", "notes.txt~", "draft.md.tmp", ".x.swp", "readme.pdf"):
        shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / name)
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr
    assert server.count() == 0
    assert env.ctl_json("status")["issues"] == []


def test_unknown_list_is_an_error(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    issue = env.tmp / "issues" / "sections.md"
    text = (DATA / "issues" / "sections.md").read_text()
    issue.write_text(text.replace("status: draft", "status: publish"))
    p = env.matrixd("--once")
    assert p.returncode == 1
    assert f"{issue}:7: no list named 'matrix-en'" in p.stderr
    assert env.ctl_json("status")["issues"] == []  # nothing published, nothing queued
    env.ctl("list-create", "matrix-en", check=0)
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr
    assert server.count() == 3


def test_draft_is_rendered_never_sent(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    env.ctl("list-create", "matrix-en", check=0)
    issue = env.tmp / "issues" / "sections.md"
    shutil.copy(DATA / "issues" / "sections.md", issue)
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr
    assert server.count() == 0
    # rendered for the editors, but not where readers could guess it
    assert (env.tmp / "state" / "preview" / "issues" / "62" / "index.html").exists()
    assert not (env.tmp / "public" / "issues" / "62").exists()
    assert "issues/62" not in (env.tmp / "public" / "index.html").read_text()
    st = env.ctl_json("status")["issues"][0]
    assert st["status"] == "draft" and st["sent"] == 0 and st["queued"] == 0
    # published later: sent once
    issue.write_text(issue.read_text().replace("status: draft", "status: publish"))
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr
    assert server.count() == 3
    assert (env.tmp / "public" / "issues" / "62" / "index.html").exists()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_is_hardened_and_verifies(tmp_path):
    unit = tmp_path / "matrixd.service"
    unit.write_text((ROOT / "systemd" / "matrixd.service").read_text()
                    .replace("@SBINDIR@", str(MATRIXD.parent)))
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for matrixd.service: ([\d.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    print("systemd-analyze security exposure:", m.group(1))
    assert float(m.group(1)) <= 2.0
    # verify, with our man pages where man(1) looks for them
    man = tmp_path / "man"
    for sec, name in (("8", "matrixd.8"), ("8", "matrixctl.8"), ("5", "matrixd.conf.5")):
        (man / f"man{sec}").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "docs" / name, man / f"man{sec}" / name)
    e = dict(os.environ, MANPATH=str(man))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, env=e)
    complaints = [l for l in (p.stdout + p.stderr).splitlines() if "matrixd.service" in l]
    assert complaints == [], complaints


def test_matrixctl_wakes_a_quiet_daemon(tmp_path, server):
    """A confirmation (and a retry) queued by matrixctl goes out at once
    from a daemon with nothing else to do: no HTTP, no timer pending. The
    admin runs matrixctl as another user than the daemon's, so the wake-up
    goes through a file in state_dir, not a signal."""
    env = smtp_env(tmp_path, server, bounce_threshold=10)
    server.rules.append(Rule("gone@example.org", "550 5.1.1 no such user", times=4))
    subscribe(env, "gone@example.org")
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / "toc-zh.txt")
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        assert wait_for(lambda: env.ctl_json("status")["issues"][0]["failed"] == 4), \
            d.stderr()
        time.sleep(1.5)  # quiet now: nothing due, nothing to wake it
        t = time.time()
        p = env.ctl("subscribe", "--confirm", "new@example.org", check=0)
        assert "a confirmation mail is queued" in p.stdout
        assert wait_for(lambda: server.to("new@example.org"), 5), d.stderr()
        took = time.time() - t
        print(f"confirmation at the relay {took:.2f} s after subscribe --confirm")
        assert took < 2.0
        time.sleep(1.5)
        t = time.time()
        assert env.ctl_json("retry")["requeued"] == 4
        assert wait_for(lambda: len(server.to("gone@example.org")) == 4, 5), d.stderr()
        took = time.time() - t
        print(f"retried deliveries at the relay {took:.2f} s after retry")
        assert took < 2.0
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_repeated_confirm_claims_nothing(env):
    first = env.ctl("subscribe", "--confirm", "x@example.org", check=0).stdout
    assert "a confirmation mail is queued" in first
    again = env.ctl("subscribe", "--confirm", "x@example.org", check=0).stdout
    assert "queued" not in again and "nothing changed" in again
    assert env.ctl_json("subscribe", "--confirm", "x@example.org")[
        "confirmation_queued"] is False
    db = sqlite3.connect(env.db)
    assert db.execute("SELECT count(*) FROM deliveries WHERE issue_id = 0").fetchone()[0] == 1
    db.close()


def test_once_waits_for_a_file_just_copied(tmp_path):
    """--once right after the copy: there is no later, so it waits for the
    file to settle (issue_settle_seconds), then sends it."""
    env = Env(tmp_path, issue_settle_seconds=2)
    env.ctl("subscribe", "ann@example.org", check=0)
    t = time.time()
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues" / "toc-zh.txt")
    p = env.matrixd("--once", timeout=60)
    took = time.time() - t
    assert p.returncode == 0, p.stderr
    assert "still being written" not in p.stderr
    assert len(list((env.tmp / "maildir" / "new").iterdir())) == 4, p.stderr
    assert 1.9 <= took < 8, took  # the settle time, to the millisecond


def test_once_gives_up_on_a_file_still_being_written(tmp_path):
    """A file that keeps changing is left for the next run after at most
    about issue_settle_seconds, never half-published."""
    env = Env(tmp_path, issue_settle_seconds=2)
    env.ctl("subscribe", "ann@example.org", check=0)
    data = (DATA / "issues" / "toc-zh.txt").read_bytes()
    target = env.tmp / "issues" / "toc-zh.txt"
    stop = threading.Event()

    def write():
        with open(target, "wb") as f:
            for i in range(0, len(data), 64):
                if stop.is_set():
                    return
                f.write(data[i:i + 64])
                f.flush()
                time.sleep(0.3)

    w = threading.Thread(target=write)
    w.start()
    try:
        time.sleep(0.3)
        t = time.time()
        p = env.matrixd("--once", timeout=60)
        took = time.time() - t
    finally:
        stop.set()
        w.join()
    assert p.returncode == 0, p.stderr
    assert "still being written" in p.stderr
    assert not (env.tmp / "maildir" / "new").exists() or \
        list((env.tmp / "maildir" / "new").iterdir()) == []
    assert took < 6, took
