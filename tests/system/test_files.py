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


def test_maildir_delivers_a_message_once_across_a_crash(env):
    """A crash after a message reached new/ but before its delivery was
    recorded leaves the delivery 'sending'; the next start sends it again.
    The Maildir transport names each message by its Message-ID's token, so
    it finds it there and writes no second copy. A half-written file of the
    killed process is swept from tmp/; one of a live process stays."""
    import socket
    env.ctl("subscribe", "ann@example.org", check=0)
    shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues")
    assert once(env).returncode == 0
    before = sorted(f.name for f in maildir_files(env))
    assert len(before) == 4
    db = sqlite3.connect(env.db)
    db.execute("UPDATE deliveries SET state = 'sending'")  # as a kill -9 leaves them
    db.commit()
    db.close()
    host = socket.gethostname()
    tmp = env.tmp / "maildir" / "tmp"
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is free now
    stale = tmp / f"1.M1P{dead.pid}Q1.{host}"
    live = tmp / f"1.M1P{os.getpid()}Q2.{host}"
    stale.write_bytes(b"Subject: half")
    live.write_bytes(b"Subject: being written")
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in maildir_files(env)) == before
    assert env.ctl_json("status")["issues"][0]["sent"] == 4
    assert not stale.exists() and live.exists()


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


# --- what issue_dir holds -------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def folder_issue(env, name, number, images=("img/cover.png", "img/b.png")):
    """A folder issue: issue.md with two articles, each showing an image."""
    d = env.tmp / "issues" / name
    (d / "img").mkdir(parents=True)
    md = (f"---\ntitle: Matrix NO.{number}\nnumber: {number}\n---\n\n"
          f"# 第一篇文章\n\n第一段正文。\n\n![封面]({images[0]})\n\n"
          f"# 第二篇文章\n\n第二段正文。\n\n![图二]({images[1]})\n")
    (d / "issue.md").write_text(md)
    for i, img in enumerate(images):
        f = d / img
        if not f.parent.exists():
            f.parent.mkdir(parents=True)
        if not f.is_symlink() and not f.exists():
            f.write_bytes(PNG + bytes([i]))
    return d


def everything_written(env, *dirs):
    """Every byte matrixd wrote where readers see it: public_dir, the mails
    (Maildir), and any extra directory."""
    out = b""
    for d in (env.tmp / "public", env.tmp / "maildir", *dirs):
        for f in pathlib.Path(d).rglob("*"):
            if f.is_file() and not f.is_symlink():
                out += f.read_bytes()
    return out


def test_folder_issue_images_are_published(env):
    """The daemon publishes a folder issue's images under issues/N/ and the
    mail and the pages link them by absolute URL."""
    env.ctl("subscribe", "ann@example.org", check=0)
    d = folder_issue(env, "matrix-70", 70)
    p = once(env)
    assert p.returncode == 0, p.stderr
    pub = env.tmp / "public" / "issues" / "70"
    for i, img in enumerate(("img/cover.png", "img/b.png")):
        assert (pub / img).read_bytes() == (d / img).read_bytes()
    url = "https://news.example.org/matrix/issues/70/img/cover.png"
    pages = "".join(f.read_text() for f in pub.glob("*.html"))
    assert f'src="{url}"' in pages
    mails = [complete(f)[0] for f in maildir_files(env)]
    assert len(mails) == 2
    html = "".join(m.get_body(("html",)).get_content() for m in mails)
    assert f'src="{url}"' in html
    assert 'src="img/' not in html and 'src="img/' not in pages


def test_linked_issue_file_is_refused(env):
    """An editor who cannot read state_dir/secret links it into issue_dir:
    it is refused with a clear error in status, and the secret appears
    nowhere: not in public_dir, not in any mail, not in the feeds."""
    env.ctl("subscribe", "ann@example.org", check=0)
    assert once(env).returncode == 0  # creates the secret
    secret = (env.tmp / "state" / "secret").read_text().strip()
    assert len(secret) == 64
    issues = env.tmp / "issues"
    os.symlink(env.tmp / "state" / "secret", issues / "matrix-101.md")
    # a folder issue whose issue.md is the link, and a linked folder
    (issues / "matrix-102").mkdir()
    os.symlink(env.tmp / "state" / "secret", issues / "matrix-102" / "issue.md")
    elsewhere = env.tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(env.tmp / "state" / "secret", elsewhere / "issue.md")
    os.symlink(elsewhere, issues / "matrix-103")
    p = once(env)
    assert p.returncode == 1, p.stderr
    st = env.ctl_json("status")
    assert st["issues"] == []
    errors = {pathlib.Path(e["path"]).relative_to(issues).parts[0]: e["error"]
              for e in st["errors"]}
    assert set(errors) == {"matrix-101.md", "matrix-102", "matrix-103"}, st["errors"]
    for e in errors.values():
        assert "symbolic link" in e and "regular file" in e
    assert secret.encode() not in everything_written(env)
    assert secret not in json.dumps(st)
    assert secret not in p.stderr


def test_linked_image_is_refused(env, tmp_path):
    """An image that is a link (here to the secret), or sits in a linked
    folder, is not copied: the issue is refused with a FILE error, by the
    daemon and by matrixctl render."""
    env.ctl("subscribe", "ann@example.org", check=0)
    assert once(env).returncode == 0
    secret_path = env.tmp / "state" / "secret"
    secret = secret_path.read_text().strip()
    d = env.tmp / "issues" / "matrix-71"
    (d / "img").mkdir(parents=True)
    os.symlink(secret_path, d / "img" / "key.png")
    os.symlink(env.tmp / "state", d / "state")
    for rel in ("img/key.png", "state/secret"):
        for f in d.glob("*.md"):
            f.unlink()
        folder_issue_md = (f"---\nnumber: 71\n---\n\n# 一\n\n正文。\n\n![x]({rel})\n")
        (d / "issue.md").write_text(folder_issue_md)
        out = tmp_path / f"out-{rel.replace('/', '-')}"
        r = env.ctl("render", d, "--out", out)
        fault = "img/key.png" if rel.startswith("img") else "matrix-71/state"
        assert r.returncode == 1, r.stderr
        assert f"/{fault}: is a symbolic link" in r.stderr, r.stderr
        assert secret.encode() not in everything_written(env, out)
    p = once(env)
    assert p.returncode == 1
    st = env.ctl_json("status")
    assert [e for e in st["errors"] if "symbolic link" in e["error"]], st
    assert not (env.tmp / "maildir" / "new").exists() or maildir_files(env) == []
    assert secret.encode() not in everything_written(env)


def test_fifo_issue_never_blocks(env):
    """A FIFO as issue.md (or as an issue file) is refused at once; the rest
    of issue_dir is still published. Before, open() waited for a writer
    forever and the whole daemon with it."""
    issues = env.tmp / "issues"
    (issues / "matrix-104").mkdir()
    os.mkfifo(issues / "matrix-104" / "issue.md")
    os.mkfifo(issues / "matrix-105.md")
    shutil.copy(DATA / "issues" / "toc-zh.txt", issues)
    t = time.time()
    p = once(env, timeout=30)
    assert time.time() - t < 20
    assert p.returncode == 1, p.stderr
    st = env.ctl_json("status")
    assert [i["number"] for i in st["issues"]] == [61]
    fifo = [e for e in st["errors"] if "FIFO" in e["error"]]
    assert {pathlib.Path(e["path"]).relative_to(issues).parts[0] for e in fifo} == \
        {"matrix-104", "matrix-105.md"}, st["errors"]


def test_linked_password_file_is_refused(env):
    """smtp.password_file must be the file itself: a link could hand the
    relay any file the daemon can read."""
    real = env.tmp / "real-password"
    real.write_text("hunter2\n")
    real.chmod(0o600)
    os.symlink(real, env.tmp / "password")
    env.write_conf(smtp_url='"smtp://127.0.0.1:2525"', smtp_username='"u"',
                   smtp_password_file=f'"{env.tmp / "password"}"')
    p = env.matrixd("-n")
    assert p.returncode == 1
    assert "symbolic link" in p.stderr and "hunter2" not in p.stderr
    (env.tmp / "password").unlink()
    os.mkfifo(env.tmp / "password", 0o600)
    p = env.matrixd("-n", timeout=20)  # a FIFO would block open() for ever
    assert p.returncode == 1 and "FIFO" in p.stderr, p.stderr
    (env.tmp / "password").unlink()
    real.rename(env.tmp / "password")
    assert env.matrixd("-n").returncode == 0


def test_render_never_writes_through_planted_links(env, tmp_path):
    """Someone who can write into render's --out directory plants links at
    every name the atomic write used to use (NAME.PID.tmp): nothing is
    written through them. matrixctl runs as PID 1 of a new PID namespace so
    that the names are known in advance."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("not root (or no unshare): cannot fix matrixctl's PID in advance")
    out = tmp_path / "out"
    first = env.ctl("render", DATA / "issues" / "toc-zh.txt", "--out", out)
    assert first.returncode == 0, first.stderr
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    written = [f for f in out.rglob("*") if f.is_file()]
    assert len(written) > 8
    for f in written:
        for pid in (1, 2):
            os.symlink(victim, f.with_name(f"{f.name}.{pid}.tmp"))
    p = subprocess.run(["unshare", "--pid", "--fork", str(MATRIXCTL), "-c", str(env.conf),
                        "render", str(DATA / "issues" / "toc-zh.txt"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert victim.read_text() == "precious\n"
    for f in written:
        assert f.is_file() and not f.is_symlink() and f.stat().st_size > 0


# --- a public_dir that cannot be written ------------------------------------------
#
# The rule (docs/design.md, "Publishing"): nothing is queued before the
# issue's pages are written; the failure is shown by `matrixctl status`
# and retried (and at SIGHUP and restart) until the pages are there.


def mail_links_resolve(env, pub, number):
    """Every article URL in every mail names a page that exists."""
    base = f"https://news.example.org/matrix/issues/{number}/"
    files = maildir_files(env)
    assert files
    for f in files:
        m, _ = complete(f)
        html = m.get_body(("html",)).get_content()
        slugs = {s.split('"')[0] for s in html.split(base)[1:]}
        assert slugs, f.name
        for s in slugs:
            assert (pub / "issues" / str(number) / (s or "index.html")).is_file(), s


def test_read_only_public_dir_queues_nothing_until_written(env):
    env.ctl("subscribe", "ann@example.org", check=0)
    with tmpfs(env.tmp / "public", "16m") as pub:
        remount(pub, "ro")
        shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues")
        for _ in range(2):  # and a restart changes nothing
            p = once(env)
            assert p.returncode == 75, p.stderr
            assert "Read-only file system" in p.stderr
            st = env.ctl_json("status")
            assert [(i["number"], i["queued"], i["sent"]) for i in st["issues"]] == [(61, 0, 0)]
            errs = [e for e in st["errors"] if "Read-only file system" in e["error"]]
            assert any(e["path"].endswith("toc-zh.txt") for e in errs), st["errors"]
            assert not (env.tmp / "maildir" / "new").exists() or maildir_files(env) == []
        remount(pub, "rw")
        p = once(env)
        assert p.returncode == 0, p.stderr
        st = env.ctl_json("status")
        assert [(i["number"], i["sent"]) for i in st["issues"]] == [(61, 4)]
        assert st["errors"] == []
        assert (pub / "index.html").is_file() and (pub / "feed.xml").is_file()
        mail_links_resolve(env, pub, 61)


def test_full_public_dir_is_retried_by_the_daemon(env):
    """A public_dir without room: the running daemon shows the error, queues
    nothing, and publishes and sends by itself once there is room; SIGHUP
    retries at once."""
    from test_daemon import Daemon
    env.ctl("subscribe", "ann@example.org", check=0)
    with tmpfs(env.tmp / "public", "12k") as pub:
        # fill what is left, so that no page fits
        (pub / "filler").write_bytes(b"x" * 4096)
        with pytest.raises(OSError):
            (pub / "filler2").write_bytes(b"x" * 65536)
        d = Daemon(env)
        try:
            assert d.wait_log("ready")
            shutil.copy(DATA / "issues" / "toc-zh.txt", env.tmp / "issues")
            assert d.wait_log("No space left on device", timeout=30), d.stderr()
            st = env.ctl_json("status")
            assert [(i["number"], i["queued"], i["sent"]) for i in st["issues"]] == [(61, 0, 0)]
            assert any("No space left on device" in e["error"] for e in st["errors"])
            # wait for the daemon's own second try, then make room and SIGHUP:
            # the next one is 10 s away, the reload does not wait for it
            end = time.time() + 30
            while d.stderr().count("pages not written") < 2 and time.time() < end:
                time.sleep(0.1)
            assert d.stderr().count("pages not written") >= 2, d.stderr()
            (pub / "filler").unlink()
            (pub / "filler2").unlink(missing_ok=True)
            remount(pub, "size=16m")
            t = time.time()
            d.p.send_signal(signal.SIGHUP)
            end = t + 8
            while time.time() < end and len(list((env.tmp / "maildir" / "new").glob("*"))
                                            if (env.tmp / "maildir" / "new").exists() else []) < 4:
                time.sleep(0.1)
            assert len(maildir_files(env)) == 4, d.stderr()
            assert time.time() - t < 8
            assert env.ctl_json("status")["errors"] == []
            mail_links_resolve(env, pub, 61)
        finally:
            d.kill()


def test_matrixctl_output_to_a_full_disk_fails(env):
    """What matrixctl prints is a write too: on a full disk (/dev/full) it
    says so and exits 1, instead of 0 with nothing written."""
    env.ctl("subscribe", "ann@example.org", check=0)
    for args in (["--json", "status"], ["export"], ["lists"], ["--json", "inspect",
                                                               DATA / "issues" / "toc-zh.txt"]):
        with open("/dev/full", "w") as full:
            p = subprocess.run([str(MATRIXCTL), "-c", str(env.conf), *map(str, args)],
                               stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
        assert p.returncode == 1, (args, p.stderr)
        assert "No space left on device" in p.stderr, (args, p.stderr)


def test_missing_image_is_warned_not_blocking(env, tmp_path):
    """An image the folder does not hold is the editor's to fix (inspect and
    the log say so, file:line); it does not hold the issue back as an
    unwritable public_dir does: the rest is published and sent."""
    from test_daemon import Daemon
    env.ctl("subscribe", "ann@example.org", check=0)
    d = folder_issue(env, "matrix-72", 72)
    (d / "img" / "b.png").unlink()
    r = env.ctl("render", d, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "img/b.png" in r.stderr and "not in the issue folder" in r.stderr
    assert (tmp_path / "out" / "public" / "issues" / "72" / "img" / "cover.png").is_file()
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert "issue=72: 1 warning from the parser" in p.stderr
    assert "inspect " + str(d / "issue.md") in p.stderr
    assert (env.tmp / "public" / "issues" / "72" / "img" / "cover.png").is_file()
    assert len(maildir_files(env)) == 2
    assert env.ctl_json("status")["errors"] == []
