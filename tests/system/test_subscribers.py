"""matrixctl lists, list-create, list-delete, subscribe, unsubscribe,
subscribers, show and forget, driven through the real binary on a temp
database; the database itself is read with Python's sqlite3 (and, for
forget, as raw bytes) to check what the CLI says."""
import json
import os
import pwd
import sqlite3

import pytest

from conftest import q

ACTOR = "cli:" + pwd.getpwuid(os.getuid()).pw_name


def member(env, email, list_="matrix"):
    rows = q(env, "SELECT m.status, m.mode, m.consent_via, m.consent_by, m.consent_at,"
                  " m.status_at FROM memberships m JOIN subscribers s ON s.id = m.subscriber_id"
                  " JOIN lists l ON l.id = m.list_id WHERE s.email = ? AND l.name = ?",
             email, list_)
    return rows[0] if rows else None


# --- usage -----------------------------------------------------------------

def test_help_lists_each_command_as_the_command_itself_says(env):
    """matrixctl --help and a command's own usage (printed on a bad option)
    are the same line: --help once lacked --private and --conflicts."""
    p = env.ctl("--help")
    lines = p.stdout.split("\n") if p.stdout.strip() else p.stderr.split("\n")
    cmds = [ln.strip() for ln in lines[lines.index("commands:") + 1:] if ln.startswith("  ")]
    assert len(cmds) > 15, lines
    for line in cmds:
        name = line.split()[0]
        u = env.ctl(name, "--no-such-option", input="", check=2)
        own = [ln for ln in u.stderr.split("\n") if ln.startswith("usage: matrixctl ")]
        assert own == ["usage: matrixctl " + line], (name, u.stderr)


# --- lists -----------------------------------------------------------------

def test_lists_default_and_json(env):
    p = env.ctl("lists", check=0)
    assert p.stdout.split("\n")[0].split() == ["LIST", "TITLE", "CONFIRMED", "PENDING",
                                               "UNSUBSCRIBED", "BOUNCED", "PACE", "WEB"]
    assert p.stdout.split("\n")[1].split() == ["matrix", "Matrix", "0", "0", "0", "0", "0",
                                               "public"]
    env.ctl("subscribe", "a@example.org", check=0)
    env.ctl("subscribe", "b@example.org", "--confirm", check=0)
    env.ctl("subscribe", "c@example.org", check=0)
    env.ctl("unsubscribe", "c@example.org", check=0)
    j = env.ctl_json("lists")
    assert len(j) == 1
    assert j[0]["name"] == "matrix" and j[0]["title"] == "Matrix"
    assert j[0]["subscribers"] == {"pending": 1, "confirmed": 1, "unsubscribed": 1,
                                   "bounced": 0}
    assert j[0]["total"] == 3
    assert j[0]["created_at"].endswith("Z")
    env.ctl("lists", "extra", check=2)


def test_private_lists(env):
    """--private: never offered on the web (test_web_subscribe.py), said so
    by lists; list-set switches it either way, in one go with the rest."""
    p = env.ctl("list-create", "staff", "--private", check=0)
    assert "created list staff" in p.stdout and "private" in p.stdout
    assert env.ctl_json("list-create", "news")["private"] is False
    j = {x["name"]: x for x in env.ctl_json("lists")}
    assert (j["staff"]["private"], j["news"]["private"], j["matrix"]["private"]) == \
        (True, False, False)
    rows = {ln.split()[0]: ln.split()[-1] for ln in env.ctl("lists", check=0).stdout.splitlines()[1:]}
    assert rows == {"matrix": "public", "news": "public", "staff": "private"}
    assert env.ctl_json("list-set", "news", "--private", "--pace", "1h") == \
        {"name": "news", "pace": 3600, "private": True}
    p = env.ctl("list-set", "staff", "--public", check=0)
    assert "public" in p.stdout
    j = {x["name"]: x for x in env.ctl_json("lists")}
    assert (j["staff"]["private"], j["news"]["private"], j["news"]["pace"]) == (False, True, 3600)
    env.ctl("list-set", "staff", "--public", "--private", check=2)
    env.ctl("list-set", "nosuch", "--private", check=1)
    # a failing part changes nothing: the private flag is not set alone
    env.ctl("list-set", "staff", "--private", "--title", "bad\ntitle", check=1)
    assert {x["name"]: x for x in env.ctl_json("lists")}["staff"]["private"] is False
    # the admin may still subscribe anyone to a private list
    env.ctl("subscribe", "a@example.org", "--list", "news", check=0)
    kinds = [r[0] for r in q(env, "SELECT kind FROM events WHERE subscriber_id IS NULL"
                                 " ORDER BY id")]
    assert kinds == ["list-create", "list-private", "list-create", "list-set", "list-private",
                     "list-public"]


def test_list_create_and_delete(env):
    p = env.ctl("list-create", "matrix-en", "--title", "Matrix 英文版", "--description",
                "English edition", check=0)
    assert "created list matrix-en" in p.stdout
    j = {x["name"]: x for x in env.ctl_json("lists")}
    assert j["matrix-en"]["title"] == "Matrix 英文版"
    assert j["matrix-en"]["description"] == "English edition"
    # the human table lines up the CJK title (two columns per character)
    lines = env.ctl("lists", check=0).stdout.splitlines()
    assert width_before(lines[0], "CONFIRMED") == width_before(lines[2], "0")
    p = env.ctl("list-create", "matrix-en", check=1)
    assert "exists" in p.stderr
    for bad in ["Matrix", "-x", "x-", "a_b", "a.b", "x" * 64, ""]:
        p = env.ctl("list-create", "--", bad, check=1)
        assert "invalid list name" in p.stderr
    env.ctl("list-create", check=2)
    env.ctl("list-create", "a", "b", check=2)
    env.ctl("list-create", "x", "--colour", "red", check=2)
    j = env.ctl_json("list-create", "plain")
    assert j == {"name": "plain", "title": "plain", "description": "", "pace": 0,
                 "private": False, "created": True}

    env.ctl("subscribe", "a@example.org", "--list", "matrix-en", check=0)
    env.ctl("subscribe", "b@example.org", "--list", "matrix-en", "--confirm", check=0)
    p = env.ctl("list-delete", "matrix-en", check=1)
    assert "2 subscriber record(s)" in p.stderr and "--force" in p.stderr
    p = env.ctl("list-delete", "matrix-en", "--force", check=0)
    assert "2 subscriber record(s)" in p.stdout
    assert q(env, "SELECT count(*) FROM memberships") == [(0,)]
    assert q(env, "SELECT count(*) FROM deliveries") == [(0,)]  # its queued confirmation
    assert q(env, "SELECT count(*) FROM subscribers") == [(2,)]  # forget erases people
    env.ctl("list-delete", "matrix-en", check=1)
    p = env.ctl("list-delete", "matrix", "--force", check=1)
    assert "default list" in p.stderr
    assert env.ctl_json("list-delete", "plain") == {"name": "plain", "deleted": True,
                                                    "memberships_removed": 0}
    env.ctl("list-delete", check=2)
    ev = q(env, "SELECT kind, actor FROM events WHERE subscriber_id IS NULL ORDER BY id")
    assert ev == [("list-create", ACTOR), ("list-create", ACTOR), ("list-delete", ACTOR),
                  ("list-delete", ACTOR)]


# --- subscribe / unsubscribe ---------------------------------------------------

def test_subscribe_records_consent(env):
    p = env.ctl("subscribe", "Alice@Example.ORG", "--name", "王丽", check=0)
    assert "subscribed Alice@Example.ORG to matrix (confirmed, article)" in p.stdout
    assert q(env, "SELECT email, email_key, name FROM subscribers") == [
        ("Alice@Example.ORG", "Alice@example.org", "王丽")]
    st, mode, via, by, at, since = member(env, "Alice@Example.ORG")
    assert (st, mode, via, by) == ("confirmed", "article", "cli", ACTOR)
    assert at == since and at > 0
    assert q(env, "SELECT kind, via, actor FROM events") == [("subscribe", "cli", ACTOR)]

    # twice (the domain in another case): not an error, changes nothing
    before = q(env, "SELECT * FROM subscribers") + q(env, "SELECT * FROM memberships")
    p = env.ctl("subscribe", "Alice@example.org", check=0)
    assert "already confirmed" in p.stdout and "nothing changed" in p.stdout
    j = env.ctl_json("subscribe", "Alice@example.org")
    assert j["result"] == "unchanged" and j["status"] == "confirmed"
    assert q(env, "SELECT * FROM subscribers") + q(env, "SELECT * FROM memberships") == before
    assert q(env, "SELECT count(*) FROM events") == [(1,)]

    # an explicit different mode is an update
    j = env.ctl_json("subscribe", "Alice@example.org", "--mode", "digest")
    assert j["result"] == "updated" and j["mode"] == "digest"
    assert member(env, "Alice@Example.ORG")[1] == "digest"


def test_subscribe_options_and_usage(env):
    env.ctl("list-create", "matrix-en", check=0)
    j = env.ctl_json("subscribe", "x@example.org", "--list", "matrix-en", "--mode", "digest",
                     "--name", "X")
    assert j == {"email": "x@example.org", "list": "matrix-en", "result": "added",
                 "status": "confirmed", "previous_status": None, "mode": "digest",
                 "confirmation_queued": False}
    assert member(env, "x@example.org") is None
    assert member(env, "x@example.org", "matrix-en")[:2] == ("confirmed", "digest")
    p = env.ctl("subscribe", "x@example.org", "--list", "nope", check=1)
    assert "no list 'nope'" in p.stderr
    env.ctl("subscribe", "x@example.org", "--mode", "weekly", check=2)
    env.ctl("subscribe", check=2)
    env.ctl("subscribe", "a@example.org", "b@example.org", check=2)
    env.ctl("subscribe", "a@example.org", "--bogus", check=2)
    p = env.ctl("subscribe", "a@example.org", "--name", "two\nlines", check=1)
    assert "control character" in p.stderr
    # --json anywhere on the line
    p = env.ctl("subscribe", "y@example.org", "--json", check=0)
    assert json.loads(p.stdout)["result"] == "added"


def test_subscribe_confirm_queues_mail(env):
    j = env.ctl_json("subscribe", "p@example.org", "--confirm")
    assert j["status"] == "pending" and j["confirmation_queued"] is True
    rows = q(env, "SELECT d.issue_id, d.part, d.list_id, d.state, d.attempts, d.next_attempt > 0"
                  " FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
                  " WHERE s.email = 'p@example.org'")
    assert rows == [(0, 1, 1, "queued", 0, 1)]
    assert member(env, "p@example.org")[:4] == ("pending", "article", "cli", ACTOR)
    # still waiting to go out: nothing new is queued, and nothing is claimed
    p = env.ctl("subscribe", "p@example.org", "--confirm", check=0)
    assert "confirmation mail is queued" not in p.stdout and "nothing changed" in p.stdout
    assert q(env, "SELECT count(*) FROM deliveries") == [(1,)]
    # sent already: asking again sends it again
    db = sqlite3.connect(env.db)
    db.execute("UPDATE deliveries SET state = 'sent'")
    db.commit()
    db.close()
    p = env.ctl("subscribe", "p@example.org", "--confirm", check=0)
    assert "confirmation mail is queued" in p.stdout and "nothing changed" not in p.stdout
    assert q(env, "SELECT state FROM deliveries") == [("queued",)]
    # an admin without --confirm vouches for a pending address
    j = env.ctl_json("subscribe", "p@example.org")
    assert j["result"] == "updated" and j["previous_status"] == "pending"
    assert j["status"] == "confirmed"
    assert q(env, "SELECT kind FROM events ORDER BY id") == [("subscribe",), ("confirm",)]


def test_suppression_needs_resubscribe(env):
    env.ctl("subscribe", "u@example.org", check=0)
    p = env.ctl("unsubscribe", "u@example.org", check=0)
    assert "unsubscribed u@example.org from matrix (was confirmed)" in p.stdout
    p = env.ctl("unsubscribe", "u@example.org", check=0)
    assert "already unsubscribed" in p.stdout
    j = env.ctl_json("unsubscribe", "u@example.org")
    assert j["result"] == "unchanged" and j["status"] == "unsubscribed"

    before = q(env, "SELECT * FROM memberships")
    p = env.ctl("subscribe", "u@example.org", check=1)
    assert "unsubscribed on list 'matrix'" in p.stderr
    assert "--resubscribe" in p.stderr and "consent" in p.stderr
    assert p.stdout == ""
    env.ctl("subscribe", "u@example.org", "--confirm", check=1)
    assert q(env, "SELECT * FROM memberships") == before
    assert q(env, "SELECT count(*) FROM deliveries") == [(0,)]

    j = env.ctl_json("subscribe", "u@example.org", "--resubscribe", "--confirm")
    assert j["previous_status"] == "unsubscribed" and j["status"] == "pending"
    assert j["confirmation_queued"] is True
    assert q(env, "SELECT kind FROM events ORDER BY id") == [
        ("subscribe",), ("unsubscribe",), ("resubscribe",)]

    # bounced is a suppression too
    con = sqlite3.connect(str(env.db))
    con.execute("UPDATE memberships SET status = 'bounced'")
    con.execute("UPDATE memberships SET bounce_score = 5")
    con.commit()
    con.close()
    p = env.ctl("subscribe", "u@example.org", check=1)
    assert "is bounced" in p.stderr
    env.ctl("subscribe", "u@example.org", "--resubscribe", check=0)
    assert q(env, "SELECT bounce_score FROM memberships") == [(0,)]


def test_unsubscribe_errors(env):
    p = env.ctl("unsubscribe", "nobody@example.org", check=1)
    assert "not on list 'matrix'" in p.stderr
    env.ctl("subscribe", "Case@example.org", check=0)
    p = env.ctl("unsubscribe", "case@example.org", check=1)
    assert "Case@example.org is known" in p.stderr and "case-sensitive" in p.stderr
    env.ctl("unsubscribe", "Case@EXAMPLE.ORG", check=0)  # the domain folds
    env.ctl("unsubscribe", check=2)
    env.ctl("unsubscribe", "a@example.org", "--list", check=2)
    env.ctl("unsubscribe", "Case@example.org", "--list", "nope", check=1)


BAD_ADDRESSES = [
    ("user@example.org\r\nBcc: victim@example.org", "line break"),
    ("user\n@example.org", "line break"),
    ("user\r@example.org", "line break"),
    ("us\ter@example.org", "control character"),
    ("us er@example.org", "space"),
    (" user@example.org", "space"),
    ("Name <user@example.org>", "'<' or '>'"),
    ("<user@example.org>", "'<' or '>'"),
    ("user>@example.org", "'<' or '>'"),
    ("user", "no '@domain'"),
    ("user@", "no domain"),
    ("@example.org", "nothing before"),
    ("a@b@example.org", "more than one '@'"),
    ("user@localhost", "not fully qualified"),
    ("user@exa_mple.org", "letters, digits"),
    ("user@-example.org", "'-'"),
    ("user@192.0.2.1", "numeric"),
    ("user@[300.0.0.1]", "literal"),
    (".user@example.org", "dot"),
    ("user.@example.org", "dot"),
    ("us..er@example.org", "two dots"),
    ("user@example..org", "two dots"),
    ("user@example.org.", "dot"),
    ("us(er@example.org", "quoted"),
    ("a" * 65 + "@example.org", "longer than 64"),
    ("u@" + "d" * 64 + ".org", "longer than 63"),
    ("u@" + ".".join(["d" * 60] * 5) + ".org", "longer than 255"),
    ("l" * 64 + "@" + ".".join(["d" * 60] * 4) + ".org", "longer than 254"),
]


@pytest.mark.parametrize("addr,why", BAD_ADDRESSES)
def test_bad_addresses_refused(env, addr, why):
    p = env.ctl("subscribe", addr, check=1)
    assert "invalid address" in p.stderr and why in p.stderr, p.stderr
    assert "\r" not in p.stderr and p.stderr.count("\n") == 1
    assert q(env, "SELECT count(*) FROM subscribers") == [(0,)]


def test_invalid_utf8_argument(env):
    # argv is checked before any command runs
    import subprocess
    from conftest import MATRIXCTL
    p = subprocess.run([str(MATRIXCTL), "-c", str(env.conf), "subscribe", b"caf\xe9@example.org"],
                       capture_output=True)
    assert p.returncode == 1 and b"UTF-8" in p.stderr


def test_good_addresses_accepted(env):
    for a in ["o'brien+news@example.ie", "用户@例子.中国", "\"a..b\"@example.org",
              "x@[192.0.2.1]", "l" * 64 + "@" + ".".join(["d" * 60] * 3) + ".or"]:
        env.ctl("subscribe", a, check=0)
    assert q(env, "SELECT count(*) FROM subscribers") == [(5,)]


# --- subscribers -------------------------------------------------------------

def width_before(line, word):
    """Terminal columns before word in line (East Asian wide = 2)."""
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in line[:line.index(word)])


def test_subscribers_listing(env):
    env.ctl("list-create", "zeta", check=0)
    env.ctl("subscribe", "b@example.org", "--name", "张伟", "--mode", "digest", check=0)
    env.ctl("subscribe", "a@example.org", "--confirm", check=0)
    env.ctl("subscribe", "b@example.org", "--list", "zeta", check=0)
    env.ctl("subscribe", "c@example.org", check=0)
    env.ctl("unsubscribe", "c@example.org", check=0)
    lines = env.ctl("subscribers", check=0).stdout.splitlines()
    assert lines[0].split() == ["EMAIL", "NAME", "LIST", "STATUS", "MODE", "SINCE", "(UTC)"]
    assert lines[1].split()[:5] == ["b@example.org", "张伟", "matrix", "confirmed", "digest"]
    assert lines[2].split()[:4] == ["a@example.org", "matrix", "pending", "article"]
    assert lines[3].split()[:4] == ["c@example.org", "matrix", "unsubscribed", "article"]
    assert lines[4].split()[:5] == ["b@example.org", "张伟", "zeta", "confirmed", "article"]
    assert len(lines) == 5
    # columns line up on screen although 张伟 is two characters four columns wide
    assert width_before(lines[0], "LIST") == width_before(lines[1], "matrix") == \
        width_before(lines[2], "matrix") == width_before(lines[4], "zeta")
    j = env.ctl_json("subscribers")
    assert [(x["email"], x["list"], x["status"], x["mode"]) for x in j] == [
        ("b@example.org", "matrix", "confirmed", "digest"),
        ("a@example.org", "matrix", "pending", "article"),
        ("c@example.org", "matrix", "unsubscribed", "article"),
        ("b@example.org", "zeta", "confirmed", "article")]
    assert j[0]["name"] == "张伟" and j[0]["since"].endswith("Z") and j[0]["attrs"] == {}
    j = env.ctl_json("subscribers", "--list", "matrix", "--status", "pending")
    assert [x["email"] for x in j] == ["a@example.org"]
    j = env.ctl_json("subscribers", "--status", "confirmed")
    assert [(x["email"], x["list"]) for x in j] == [("b@example.org", "matrix"),
                                                    ("b@example.org", "zeta")]
    assert env.ctl_json("subscribers", "--status", "bounced") == []
    env.ctl("subscribers", "--status", "gone", check=2)
    env.ctl("subscribers", "--list", "nope", check=1)
    env.ctl("subscribers", "stray", check=2)


# --- show / forget -----------------------------------------------------------

def test_show(env):
    env.ctl("list-create", "zeta", check=0)
    env.ctl("subscribe", "s@example.org", "--name", "Show Me", check=0)
    env.ctl("subscribe", "s@example.org", "--list", "zeta", "--confirm", check=0)
    env.ctl("unsubscribe", "s@example.org", check=0)
    con = sqlite3.connect(str(env.db))
    con.execute("UPDATE subscribers SET attrs = '{\"city\":\"北京\"}'")
    con.execute("UPDATE memberships SET bounce_score = 1 WHERE list_id = 1")
    con.execute("INSERT INTO deliveries(issue_id, part, subscriber_id, list_id, state, created_at,"
                " updated_at) VALUES (7, 1, 1, 1, 'sent', 1, 1), (7, 2, 1, 1, 'failed', 1, 1)")
    con.commit()
    con.close()
    j = env.ctl_json("show", "s@EXAMPLE.org")
    assert j["email"] == "s@example.org" and j["name"] == "Show Me"
    assert j["attrs"] == {"city": "北京"} and j["bounce_score"] == 1
    assert [(m["list"], m["status"], m["mode"]) for m in j["memberships"]] == [
        ("matrix", "unsubscribed", "article"), ("zeta", "pending", "article")]
    assert j["memberships"][0]["consent"]["via"] == "cli"
    assert j["memberships"][0]["consent"]["by"] == ACTOR
    assert [(e["kind"], e["list"]) for e in j["events"]] == [
        ("subscribe", "matrix"), ("subscribe", "zeta"), ("unsubscribe", "matrix")]
    assert j["deliveries"] == {"queued": 1, "sending": 0, "sent": 1, "deferred": 0, "failed": 1}
    out = env.ctl("show", "s@example.org", check=0).stdout
    for needle in ["email:         s@example.org", "bounce score:  1", "city", "北京",
                   "memberships:", "history:", "unsubscribe", "via cli by " + ACTOR,
                   "queued 1, sending 0, sent 1, deferred 0, failed 1"]:
        assert needle in out, needle
    p = env.ctl("show", "nobody@example.org", check=1)
    assert "nothing is held about nobody@example.org" in p.stderr
    env.ctl("show", "not an address", check=1)
    env.ctl("show", check=2)


def raw_bytes(env):
    data = b""
    for suffix in ("", "-wal"):
        path = str(env.db) + suffix
        if os.path.exists(path):
            with open(path, "rb") as f:
                data += f.read()
    return data


class Holder:
    """Another process with the database open, as matrixd keeps it: in a
    process of its own, since closing any descriptor of the file in this
    one (raw_bytes) would drop this process's POSIX locks, SQLite's too.
    in_tx: hold a read transaction (a snapshot) as well."""

    def __init__(self, env, in_tx=False):
        import subprocess
        import sys
        code = ("import sqlite3, sys\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "if sys.argv[2] == '1': c.execute('BEGIN')\n"
                "c.execute('SELECT count(*) FROM subscribers').fetchall()\n"
                "print('ready', flush=True)\n"
                "sys.stdin.readline()\n"
                "if sys.argv[2] == '1': c.execute('COMMIT')\n"
                "c.close()\n")
        self.p = subprocess.Popen([sys.executable, "-c", code, str(env.db), "1" if in_tx else "0"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"

    def close(self):
        self.p.communicate("done\n", timeout=30)
        assert self.p.returncode == 0


def test_forget_leaves_no_trace(env):
    """While another connection (as matrixd's would) keeps the database
    open, so that closing matrixctl's connection does not clean the WAL up
    by itself."""
    secret = "Zebulon.Quetzal-7731"
    addr = secret + "@Forget-Me.example.org"
    env.ctl("subscribe", "keep@example.org", "--name", "Keeper", check=0)
    env.ctl("subscribe", addr, "--name", "Zebulon Quetzalcoatl", "--confirm", check=0)
    env.ctl("list-create", "zeta", check=0)
    env.ctl("subscribe", addr, "--list", "zeta", check=0)
    env.ctl("unsubscribe", addr, "--list", "zeta", check=0)
    daemon = Holder(env)

    def raw():
        return raw_bytes(env)

    # the test can fail: the address is in the files before
    assert secret.encode() in raw()
    assert b"forget-me.example.org" in raw()
    j = env.ctl_json("forget", secret + "@forget-me.EXAMPLE.org")  # the domain folds
    assert j["memberships"] == 2 and j["events"] == 3 and j["deliveries"] == 1
    assert j["wal_truncated"] is True
    assert os.path.getsize(str(env.db) + "-wal") == 0
    for needle in [secret.encode(), b"Forget-Me", b"forget-me", b"Quetzalcoatl"]:
        assert needle not in raw(), needle
    daemon.close()
    # everything else stays
    assert q(env, "SELECT email, name FROM subscribers") == [("keep@example.org", "Keeper")]
    assert q(env, "SELECT count(*) FROM memberships") == [(1,)]
    assert q(env, "SELECT count(*) FROM events WHERE subscriber_id IS NOT NULL") == [(1,)]
    assert q(env, "SELECT kind, actor, detail FROM events WHERE kind = 'forget'") == [
        ("forget", ACTOR, "")]
    env.ctl("show", addr, check=1)
    p = env.ctl("forget", addr, check=1)
    assert "nothing to forget" in p.stderr
    p = env.ctl("forget", "keep@example.org", check=0)
    assert "forgot keep@example.org" in p.stdout
    env.ctl("forget", check=2)


def test_forget_with_a_reader_warns(env):
    """A reader in a transaction pins the WAL: forget erases the rows and
    says that old copies stay until the WAL can be checkpointed."""
    addr = "pinned.reader.4242@example.org"
    env.ctl("subscribe", addr, check=0)
    reader = Holder(env, in_tx=True)
    p = env.ctl("--json", "forget", addr, check=0)
    assert json.loads(p.stdout)["wal_truncated"] is False
    assert "warning" in p.stderr and "-wal" in p.stderr
    reader.close()  # the last connection: SQLite checkpoints and removes the WAL
    assert addr.encode() not in raw_bytes(env)
    assert q(env, "SELECT count(*) FROM subscribers") == [(0,)]


def test_list_names_one_rule(env, tmp_path):
    """An issue's lists: line and list-create take the same names: what one
    refuses, the other refuses with the same rule, and what one takes the
    other takes."""
    body = "\n# 标题\n\n正文。\n"

    def inspect(names):
        f = tmp_path / "matrix-061.md"
        f.write_text(f"---\ntitle: T\nnumber: 61\nlists: {names}\n---\n" + body)
        return env.ctl("inspect", f)

    for bad in ("my_list", "my.list", "a" * 64, "-x", "x-", "My"):
        p_issue, p_create = inspect(bad), env.ctl("list-create", "--", bad)
        assert p_issue.returncode == 1 and p_create.returncode == 1, bad
        rule = "1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
        assert rule in p_issue.stderr and rule in p_create.stderr, (bad, p_issue.stderr)
    for good in ("my-list", "a" * 63, "x1"):
        assert inspect(good).returncode == 0, good
        env.ctl("list-create", good, check=0)
