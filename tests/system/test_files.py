"""Files under failure and attack: the Maildir transport on a full disk and
its line ends, hostile files in issue_dir (links to the secret, FIFOs),
folder issues' images, planted links under `render --out`, and a public_dir
that cannot be written. The disk tests mount a small tmpfs (root only; they
are skipped with a message otherwise)."""
import email
import email.policy
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import DATA, MATRIXCTL, MATRIXD, SEED, Env, remount, tmpfs

LATER = 24 * 3600  # past every backoff


def once(env, fake_now=None, timeout=300):
    e = {"MATRIXD_FAKE_NOW": str(int(fake_now))} if fake_now else {}
    return env.matrixd("--once", env=e, timeout=timeout)


def subscribe_many(env, n_article, n_digest=0):
    rows = "email,name,mode\n"
    rows += "".join(f"a{i}@example.org,,article\n" for i in range(n_article))
    rows += "".join(f"d{i}@example.org,,digest\n" for i in range(n_digest))
    (env.tmp / "subs.csv").write_text(rows)
    env.ctl("import", env.tmp / "subs.csv", check=0)


def complete(path):
    """The message in path, parsed strictly, whole: both parts decode and
    the closing MIME boundary is there. Returns (message, raw bytes)."""
    raw = path.read_bytes()
    m = email.message_from_bytes(raw, policy=email.policy.strict)
    b = m.get_boundary()
    assert b and raw.rstrip().endswith(f"--{b}--".encode()), f"{path.name} is cut"
    assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    for p in m.iter_parts():
        assert p.get_content().strip()
    return m, raw


def maildir_files(env):
    return sorted((env.tmp / "maildir" / "new").iterdir())


def states(env):
    db = sqlite3.connect(env.db)
    try:
        return dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
    finally:
        db.close()


# --- the Maildir transport ----------------------------------------------------


def test_maildir_files_have_lf_line_ends(env):
    """A Maildir file is a local mailbox file: LF line ends (mutt shows ^M
    for CR). The message still parses strictly."""
    env.ctl("subscribe", "ann@example.org", check=0)
    env.ctl("subscribe", "dig@example.org", "--mode", "digest", check=0)
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues")
    p = once(env)
    assert p.returncode == 0, p.stderr
    files = maildir_files(env)
    assert len(files) == 5
    for f in files:
        m, raw = complete(f)
        assert b"\r" not in raw, f.name
        assert m["Return-Path"].startswith("<bounces+")
        assert m["Delivered-To"] in ("ann@example.org", "dig@example.org")
        assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # header lines stay within RFC 5322's 998 octets without their CRLF too
        assert max(len(line) for line in raw.split(b"\n")) <= 998


def test_maildir_full_disk_loses_nothing(env):
    """400 deliveries into a 2 MiB Maildir: what does not fit is not recorded
    sent (a full disk is the transport's trouble: pause and retry, nothing
    counted); every message recorded sent is complete on disk. Once there is
    room again, everything arrives, complete, once."""
    subscribe_many(env, 25, 25)  # 25 x 15 articles + 25 digests = 400
    shutil.copy(SEED, env.tmp / "issues")
    with tmpfs(env.tmp / "maildir", "2m") as md:
        p = once(env)
        assert p.returncode == 75, p.stderr
        assert "No space left on device" in p.stderr
        files = maildir_files(env)
        st = states(env)
        assert 0 < len(files) < 400
        assert st.get("sent", 0) == len(files), (st, len(files))
        assert st.get("sending", 0) == 0 and st.get("failed", 0) == 0
        for f in files:
            complete(f)
        assert list((md / "tmp").iterdir()) == [], "half-written files left behind"
        # the disk's trouble never counts as an attempt of the message
        db = sqlite3.connect(env.db)
        assert db.execute("SELECT max(attempts) FROM deliveries WHERE state != 'sent'"
                          ).fetchone()[0] == 0
        db.close()

        remount(md, "size=256m")
        p = once(env, fake_now=time.time() + LATER)
        assert p.returncode == 0, p.stderr
        files = maildir_files(env)
        pairs = []
        for f in files:
            m, _ = complete(f)
            pairs.append((m["Delivered-To"], str(m["Subject"])))
        assert len(files) == 400 and len(set(pairs)) == 400
        assert states(env) == {"sent": 400}
