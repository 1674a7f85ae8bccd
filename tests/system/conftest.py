"""Shared fixtures for the system tests: the real binaries, a fresh
configuration in a temp directory, and helpers to run them.

Run with Debian's /usr/bin/python3 (make check does): it sees the python3-*
packages (aiosmtpd, feedparser) that another python3 on PATH may not.
"""
import contextlib
import json
import os
import pathlib
import shutil
import sqlite3
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MATRIXD_BUILD", ROOT / "build"))
MATRIXD = BUILD / "matrixd"
MATRIXCTL = BUILD / "matrixctl"
DATA = ROOT / "tests" / "data"
SEED = ROOT / "examples" / "issues" / "matrix-060.txt"


def conf_text(tmp, **over):
    """A complete matrixd.conf for a temp directory; keyword arguments
    replace top-level keys or group keys given as 'smtp_url' etc."""
    v = {
        "issue_dir": f'"{tmp}/issues"',
        "state_dir": f'"{tmp}/state"',
        "public_dir": f'"{tmp}/public"',
        "template_dir": f'"{ROOT}/templates"',
        "issue_settle_seconds": "0",
        "site_base_url": '"https://news.example.org/matrix/"',
        "site_from": '"Matrix 矩阵 <matrix@example.org>"',
        "smtp_url": f'"maildir:{tmp}/maildir"',
        "smtp_return_path": '"bounces+{token}@example.org"',
        "http_listen": '""',
    }
    v.update({k: (x if x is None or isinstance(x, str) else str(x)) for k, x in over.items()})
    top, groups = [], {}
    for k, x in v.items():
        if x is None:
            continue
        g, _, name = k.partition("_")
        if g in ("site", "smtp", "http") and name:
            groups.setdefault(g, []).append(f"  {name} = {x};")
        else:
            top.append(f"{k} = {x};")
    out = "\n".join(top) + "\n"
    for g, lines in groups.items():
        out += f"{g} = {{\n" + "\n".join(lines) + "\n};\n"
    return out


class Env:
    """A temp installation: config, state, issue and public directories."""

    def __init__(self, tmp, **over):
        self.tmp = pathlib.Path(tmp)
        for d in ("issues", "state", "public", "maildir"):
            (self.tmp / d).mkdir(exist_ok=True)
        self.conf = self.tmp / "matrixd.conf"
        self.write_conf(**over)

    def write_conf(self, **over):
        self.conf.write_text(conf_text(self.tmp, **over))

    @property
    def db(self):
        return self.tmp / "state" / "matrixd.db"

    def ctl(self, *args, input=None, check=None, env=None, timeout=120):
        """Runs matrixctl -c CONF ARGS; returns CompletedProcess (text)."""
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([str(MATRIXCTL), "-c", str(self.conf), *map(str, args)],
                           input=input, capture_output=True, text=True, env=e,
                           timeout=timeout)
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p

    def ctl_json(self, *args, **kw):
        p = self.ctl("--json", *args, **kw)
        assert p.returncode == 0, (p.returncode, p.stderr)
        return json.loads(p.stdout)

    def matrixd(self, *args, env=None, timeout=300):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([str(MATRIXD), "-c", str(self.conf), *map(str, args)],
                              capture_output=True, text=True, env=e, timeout=timeout)


@pytest.fixture
def server(tmp_path):
    """The SMTP relay of smtpd.py (STARTTLS, AUTH, scripted replies) on a
    free 127.0.0.1 port, with its certificate under tmp_path/tls; stopped
    when the test ends."""
    from smtpd import Server  # aiosmtpd: only for the tests that relay

    (tmp_path / "tls").mkdir()
    srv = Server(tmp_path / "tls").start()
    yield srv
    srv.stop()


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def ctl_noconf(*args, input=None):
    """matrixctl without any configuration file."""
    e = dict(os.environ)
    e.pop("MATRIXD_CONF", None)
    return subprocess.run([str(MATRIXCTL), *map(str, args)], input=input,
                          capture_output=True, text=True, env=e, timeout=60)


# What each schema version after 3 added, undone: the tests that fake an
# older store (to test a migration) first take the store back to it.
LATER_SCHEMA = {
    4: "ALTER TABLE issues DROP COLUMN send_at; ALTER TABLE issues DROP COLUMN held_at;"
       "ALTER TABLE issues DROP COLUMN released_at;",
    5: "ALTER TABLE issues DROP COLUMN pages_hash;",
    6: "ALTER TABLE lists DROP COLUMN pace; ALTER TABLE deliveries DROP COLUMN not_before;",
    7: "ALTER TABLE lists DROP COLUMN private; ALTER TABLE subscribers DROP COLUMN web_mail_at;",
}


def schema_back_to(con, version):
    """Undoes the migrations after version (down to 3) on a sqlite3 connection."""
    for v in sorted(LATER_SCHEMA, reverse=True):
        if v > max(version, 3):
            con.executescript(LATER_SCHEMA[v])


def q(env, sql, *args):
    """The rows of one query on env's store, through a connection of its own."""
    con = sqlite3.connect(str(env.db))
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def have(cmd):
    return shutil.which(cmd) is not None


@contextlib.contextmanager
def tmpfs(path, size):
    """A small tmpfs mounted at path for the duration (a full disk that
    fills in a few messages, or one to remount read-only). Needs root: the
    test is skipped with a message otherwise."""
    if os.geteuid() != 0:
        pytest.skip("not root: cannot mount the small tmpfs this test fills")
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path, opts):
    """mount -o remount,OPTS PATH (size=…, ro, rw)."""
    subprocess.run(["mount", "-o", f"remount,{opts}", str(path)], check=True)
