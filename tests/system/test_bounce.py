"""matrixctl bounce: messages that come back, as the MTA pipes them in.
Realistic samples (tests/data/bounces, written after Postfix, Exim, Gmail,
qmail and ARF reports) are classified; bounces made for real deliveries
find them through the VERP address and change the store."""
import email
import email.policy
import json
import re
import shutil

import pytest

from conftest import DATA, SEED, schema_back_to

SAMPLES = DATA / "bounces"
SAMPLE_VERP = "bounces+1234-0123456789abcdef@example.org"


@pytest.mark.parametrize("name,kind,status", [
    ("postfix-dsn-hard.eml", "hard", "5.1.1"),
    ("gmail-dsn-hard.eml", "hard", "5.1.1"),
    ("exim-text-hard.eml", "hard", "5.0.0"),
    ("qmail-text-hard.eml", "hard", None),
    ("postfix-delay-soft.eml", "soft", "4.4.1"),
    ("exim-delay-soft.eml", "soft", None),
    ("arf-abuse.eml", "complaint", None),
    ("unsubscribe-mailto.eml", "unsubscribe", None),
    ("vacation-autoreply.eml", "not-a-bounce", None),
    ("plain-mail.eml", "not-a-bounce", None),
])
def test_samples_classified(env, name, kind, status):
    p = env.ctl("--json", "bounce", "--dry-run", input=(SAMPLES / name).read_text())
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["kind"] == kind
    assert set(d) == {"kind", "recipients", "delivery"}
    if status:
        assert d["recipients"][0]["status"].startswith(status[:1])
        assert d["recipients"][0]["status"] == status or status.endswith(".0.0")
    if kind in ("hard", "soft"):
        r = d["recipients"][0]
        assert r["address"] and r["action"] and r["diagnostic"]
    assert d["delivery"] is None  # the sample's token is signed by no key of ours


def delivered(env):
    out = []
    for f in sorted((env.tmp / "maildir" / "new").iterdir()):
        m = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        out.append(m)
    return out


def publish(env, src=SEED):
    shutil.copy(src, env.tmp / "issues" / src.name)
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr


def verp_of(m):
    return m["Return-Path"].strip("<>")


def dsn_for(m, rcpt, sample="postfix-dsn-hard.eml", verp=None):
    text = (SAMPLES / sample).read_text()
    text = re.sub(r"bounces\+\d+-[0-9a-f]{16}@example\.org", verp or verp_of(m), text)
    text = re.sub(r"wang\.fang@example\.net", rcpt, text)
    return text


def test_three_hard_bounces_make_a_subscriber_bounced(env):
    env.ctl("subscribe", "ann@example.org", check=0)
    env.ctl("subscribe", "gone@example.org", check=0)
    publish(env)
    mails = [m for m in delivered(env) if m["To"] == "gone@example.org"]
    assert len(mails) == 15
    # dry run: the delivery is found, nothing changes
    p = env.ctl("--json", "bounce", "--dry-run", input=dsn_for(mails[0], "gone@example.org"))
    d = json.loads(p.stdout)
    assert d["kind"] == "hard"
    assert d["delivery"]["issue"] == 60 and d["delivery"]["subscriber"] == "gone@example.org"
    assert 1 <= d["delivery"]["article"] <= 15
    assert env.ctl_json("show", "gone@example.org")["bounce_score"] == 0
    for i in range(3):
        sample = ("postfix-dsn-hard.eml", "gmail-dsn-hard.eml", "exim-text-hard.eml")[i]
        p = env.ctl("bounce", input=dsn_for(mails[i], "gone@example.org", sample))
        assert p.returncode == 0, p.stderr
        assert "hard" in p.stdout
    show = env.ctl_json("show", "gone@example.org")
    assert show["bounce_score"] == 3
    assert [m["status"] for m in show["memberships"]] == ["bounced"]
    # the next issue does not reach them
    publish(env, DATA / "issues" / "toc-zh.txt")
    new = [m for m in delivered(env) if m["Subject"] == "量子计算：从实验室走向产业"]
    assert [m["To"] for m in new] == ["ann@example.org"]


def test_soft_bounce_is_only_logged(env):
    env.ctl("subscribe", "slow@example.org", check=0)
    publish(env)
    m = delivered(env)[0]
    text = (SAMPLES / "postfix-delay-soft.eml").read_text().replace(SAMPLE_VERP, verp_of(m))
    p = env.ctl("bounce", input=text)
    assert p.returncode == 0 and "soft" in p.stdout
    show = env.ctl_json("show", "slow@example.org")
    assert show["bounce_score"] == 0
    assert show["memberships"][0]["status"] == "confirmed"


def test_complaint_unsubscribes(env):
    env.ctl("subscribe", "angry@example.org", check=0)
    publish(env)
    m = delivered(env)[0]
    text = (SAMPLES / "arf-abuse.eml").read_text()
    # the returned original carries our Message-ID
    text = re.sub(r"Message-ID: <[^>]+>", f"Message-ID: {m['Message-ID']}", text, count=2,
                  flags=re.I)
    p = env.ctl("bounce", input=text)
    assert p.returncode == 0, p.stderr
    assert "complain" in p.stdout
    show = env.ctl_json("show", "angry@example.org")
    assert show["memberships"][0]["status"] == "unsubscribed"


def test_unsubscribe_by_mail(env):
    env.ctl("subscribe", "leaver@example.org", check=0)
    publish(env)
    m = delivered(env)[0]
    mailto = re.search(r"<mailto:([^>]+)>", m["List-Unsubscribe"]).group(1)
    msg = (f"From: leaver@example.org\nTo: {mailto}\nSubject: unsubscribe\n"
           f"Message-ID: <x1@example.org>\n\nunsubscribe\n")
    p = env.ctl("bounce", input=msg)
    assert p.returncode == 0, p.stderr
    assert env.ctl_json("show", "leaver@example.org")["memberships"][0]["status"] == \
        "unsubscribed"
    # a forged token changes nothing
    env.ctl("subscribe", "stays@example.org", check=0)
    forged = msg.replace(mailto, re.sub(r"-[0-9a-f]{16}-[0-9a-f]{16}@",
                                        "-" + "0" * 16 + "-" + "0" * 16 + "@", mailto))
    forged = forged.replace("leaver@", "stays@")
    p = env.ctl("bounce", input=forged)
    assert p.returncode == 0
    assert env.ctl_json("show", "stays@example.org")["memberships"][0]["status"] == "confirmed"


def test_garbage_and_huge_input_exit_zero(env):
    assert env.ctl("bounce", input="\x00\x01 not a message").returncode == 0
    p = env.ctl("bounce", input="x" * (1024 * 1024 + 10))
    assert p.returncode == 0 and "dropped" in p.stderr


def test_bounce_before_the_relay_reply(tmp_path):
    """A local MTA bounces in milliseconds, before the daemon has recorded
    the relay's 250: the bounce still wins, and counts once however often
    it comes, before or after the reply was recorded."""
    import sqlite3
    import subprocess
    import time

    from conftest import MATRIXD
    from smtpd import Server
    from test_delivery import smtp_env

    (tmp_path / "tls").mkdir()
    srv = Server(tmp_path / "tls").start()
    try:
        srv.delay = 4
        env = smtp_env(tmp_path, srv)
        env.ctl("subscribe", "gone@example.org", check=0)
        shutil.copy(DATA / "issues" / "single-63.md", env.tmp / "issues")
        d = subprocess.Popen([str(MATRIXD), "-c", str(env.conf), "--once"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 60
            while not srv.arrived and time.time() < deadline:
                time.sleep(0.05)
            assert srv.arrived, "the message never reached the relay"
            con = sqlite3.connect(env.db)
            state = lambda: con.execute("SELECT state FROM deliveries").fetchall()
            assert state() == [("sending",)]
            dsn = dsn_for(None, "gone@example.org", verp=srv.arrived[0].mail_from)
            p = env.ctl("bounce", input=dsn)
            assert p.returncode == 0, p.stderr
            assert "hard" in p.stdout
            assert state() == [("failed",)]
            out, err = d.communicate(timeout=120)
        finally:
            if d.poll() is None:
                d.kill()
                d.wait()
        assert d.returncode == 0, err
        assert len(srv.received) == 1  # the relay did answer 250 meanwhile
        assert state() == [("failed",)]
        assert "5.1.1" in con.execute("SELECT last_status FROM deliveries").fetchone()[0]
        show = env.ctl_json("show", "gone@example.org")
        assert show["bounce_score"] == 1
        assert show["memberships"][0]["bounce_score"] == 1
        # the same DSN again, after the reply was recorded: counted once
        p = env.ctl("bounce", input=dsn)
        assert p.returncode == 0, p.stderr
        assert "already recorded" in p.stdout
        show = env.ctl_json("show", "gone@example.org")
        assert show["bounce_score"] == 1 and show["memberships"][0]["status"] == "confirmed"
        assert state() == [("failed",)]
        con.close()
    finally:
        srv.stop()


def test_a_bounce_counts_for_the_list_of_its_delivery(env):
    """The bounce score is the membership's (subscriber, list): bounces of
    mail sent for one list make that membership bounced, not the others."""
    env.ctl("list-create", "extra", check=0)
    env.ctl("subscribe", "two@example.org", check=0)
    env.ctl("subscribe", "two@example.org", "--list", "extra", check=0)
    issue = env.tmp / "matrix-060.txt"
    issue.write_text("---\nlists: matrix\n---\n" + SEED.read_text())
    publish(env, issue)
    mails = [m for m in delivered(env) if m["To"] == "two@example.org"]
    assert len(mails) == 15
    for i in range(3):
        p = env.ctl("bounce", input=dsn_for(mails[i], "two@example.org"))
        assert p.returncode == 0, p.stderr
    show = env.ctl_json("show", "two@example.org")
    by_list = {m["list"]: m for m in show["memberships"]}
    assert by_list["matrix"]["status"] == "bounced"
    assert by_list["matrix"]["bounce_score"] == 3
    assert by_list["extra"]["status"] == "confirmed"
    assert by_list["extra"]["bounce_score"] == 0


def test_a_v1_store_keeps_its_bounce_scores(env):
    """Schema 1 kept the score per subscriber and marked a counted bounce by
    its reply text; opening it moves both to where they live now."""
    import sqlite3
    env.ctl("list-create", "extra", check=0)
    env.ctl("subscribe", "old@example.org", check=0)
    env.ctl("subscribe", "old@example.org", "--list", "extra", check=0)
    con = sqlite3.connect(env.db)
    schema_back_to(con, 1)
    con.executescript(
        "ALTER TABLE memberships DROP COLUMN bounce_score;"
        "ALTER TABLE deliveries DROP COLUMN bounced_at;"
        "ALTER TABLE subscribers ADD COLUMN bounce_score INTEGER NOT NULL DEFAULT 0;"
        "UPDATE subscribers SET bounce_score = 2;"
        "INSERT INTO deliveries(issue_id, part, subscriber_id, list_id, state, last_reply,"
        " created_at, updated_at) VALUES (7, 1, 1, 1, 'failed', 'bounced: 550 5.1.1 no', 1, 5),"
        " (7, 2, 1, 1, 'failed', '550 5.1.1 no', 1, 6);"
        "PRAGMA user_version = 1;")
    con.close()
    show = env.ctl_json("show", "old@example.org")
    assert [m["bounce_score"] for m in show["memberships"]] == [2, 2]
    con = sqlite3.connect(env.db)
    assert con.execute("SELECT part, bounced_at FROM deliveries ORDER BY part").fetchall() == \
        [(1, 5), (2, None)]
    assert "bounce_score" not in [r[1] for r in con.execute("PRAGMA table_info(subscribers)")]
    con.close()


def with_ids(sample, mid):
    """A sample whose In-Reply-To/References (and nothing else) name mid."""
    text = (SAMPLES / sample).read_text()
    return re.sub(r"^(In-Reply-To|References): <[^>]+>", rf"\1: {mid}", text, flags=re.M)


def test_forged_replies_change_nothing(env):
    """Replies carry our Message-IDs in In-Reply-To/References; three of
    them saying "Re: delivery failed … permanent error" bounced a
    subscriber on every list. A person's reply is no bounce, and a
    Message-ID only in a report's own headers proves nothing."""
    env.ctl("list-create", "extra", check=0)
    env.ctl("subscribe", "victim@example.org", check=0)
    env.ctl("subscribe", "victim@example.org", "--list", "extra", check=0)
    publish(env)
    mails = [m for m in delivered(env) if m["To"] == "victim@example.org"]
    for m in mails[:3]:
        p = env.ctl("bounce", input=with_ids("reply-delivery-failed.eml", m["Message-ID"]))
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("not-a-bounce") and "reply" in p.stdout
    # the same words without the reply's marks: a "bounce" for no delivery
    for m in mails[3:6]:
        text = with_ids("reply-delivery-failed.eml", m["Message-ID"])
        text = text.replace("Subject: Re: delivery failed", "Subject: delivery failed")
        text = re.sub(r"^In-Reply-To: .*\n", "", text, flags=re.M)
        p = env.ctl("bounce", input=text)
        assert p.returncode == 0, p.stderr
        assert "not acted on" in p.stdout
        d = json.loads(env.ctl("--json", "bounce", "--dry-run", input=text).stdout)
        assert d["delivery"] is None
    show = env.ctl_json("show", "victim@example.org")
    assert [(m["status"], m["bounce_score"]) for m in show["memberships"]] == \
        [("confirmed", 0), ("confirmed", 0)]
    assert not [e for e in show["events"] if e["kind"] != "subscribe"]
    assert show["deliveries"]["failed"] == 0


def test_a_complaint_naming_us_only_in_in_reply_to_changes_nothing(env):
    env.ctl("subscribe", "victim@example.org", check=0)
    publish(env)
    m = delivered(env)[0]
    p = env.ctl("bounce", input=with_ids("arf-in-reply-to.eml", m["Message-ID"]))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("complaint") and "dropped" in p.stdout
    show = env.ctl_json("show", "victim@example.org")
    assert show["memberships"][0]["status"] == "confirmed"


def test_a_queue_expiry_fails_the_delivery(env):
    """Postfix gives up on mail it could not deliver for its whole queue
    lifetime with Action: failed and a 4.x.x status: a failure, counted."""
    env.ctl("subscribe", "down@example.org", check=0)
    publish(env)
    m = delivered(env)[0]
    p = env.ctl("bounce", input=dsn_for(m, "down@example.org", "postfix-expired-hard.eml"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("hard") and "4.4.1" in p.stdout
    show = env.ctl_json("show", "down@example.org")
    assert show["memberships"][0]["bounce_score"] == 1
    assert show["deliveries"]["failed"] == 1
    assert [e["kind"] for e in show["events"]][-1] == "bounce"
    assert "4.4.1" in show["events"][-1]["detail"]


def test_a_receiver_refusing_us_is_not_the_subscribers_bounce(env):
    """A final 4.7.x failure is a receiver that kept refusing our IP or our
    volume: the delivery is lost, but the address is not to blame."""
    env.ctl("subscribe", "big@example.org", check=0)
    publish(env)
    m = delivered(env)[0]
    text = dsn_for(m, "big@example.org", "postfix-expired-hard.eml")
    text = text.replace("Status: 4.4.1", "Status: 4.7.0").replace(
        "X-Postfix; connect to mx.example.net[192.0.2.25]:25:\n    Connection timed out",
        "smtp; 421 4.7.0 [TS04] Messages from 198.51.100.7 temporarily deferred")
    p = env.ctl("bounce", input=text)
    assert p.returncode == 0, p.stderr
    assert "not counted" in p.stdout
    show = env.ctl_json("show", "big@example.org")
    assert show["memberships"][0] == {**show["memberships"][0], "status": "confirmed",
                                      "bounce_score": 0}
    assert show["deliveries"]["failed"] == 1
    assert show["events"][-1]["kind"] == "refused"


def test_a_delay_is_noted_apart_from_failures(env):
    env.ctl("subscribe", "slow@example.org", check=0)
    publish(env)
    mails = delivered(env)
    p = env.ctl("bounce", input=dsn_for(mails[0], "slow@example.org", "postfix-delay-soft.eml"))
    assert p.returncode == 0 and "delayed" in p.stdout
    p = env.ctl("bounce", input=dsn_for(mails[1], "slow@example.org"))
    assert p.returncode == 0 and "failed" in p.stdout
    show = env.ctl_json("show", "slow@example.org")
    assert [e["kind"] for e in show["events"]] == ["subscribe", "delayed", "bounce"]
    assert show["deliveries"]["failed"] == 1 and show["deliveries"]["sent"] == 14


def test_a_store_that_fails_the_lookup_exits_75(env):
    """The MTA keeps what we could not record: exit 75, never 0."""
    import sqlite3
    env.ctl("subscribe", "gone@example.org", check=0)
    publish(env)
    dsn = dsn_for(delivered(env)[0], "gone@example.org")
    con = sqlite3.connect(env.db)
    con.execute("ALTER TABLE deliveries RENAME TO deliveries_broken")
    con.commit()
    con.close()
    p = env.ctl("bounce", input=dsn)
    assert p.returncode == 75, (p.stdout, p.stderr)
    assert "try again later" in p.stderr
    assert env.ctl("--json", "bounce", "--dry-run", input=dsn).returncode == 75
    # a configuration that does not load: 75 as well
    env.conf.write_text(env.conf.read_text() + "\nbounce_treshold = 3;\n")
    assert env.ctl("bounce", input=dsn).returncode == 75


def test_dry_run_needs_no_secret(env):
    """An admin in the daemon's group may read the store but not the 0600
    secret: --dry-run still says what the message is; recording needs it."""
    import os
    import subprocess
    from conftest import MATRIXCTL
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run matrixctl as another user")
    env.ctl("subscribe", "gone@example.org", check=0)
    publish(env)
    dsn = dsn_for(delivered(env)[0], "gone@example.org")
    os.chmod(env.tmp, 0o755)
    for p in (env.tmp / "state").iterdir():
        if p.name != "secret":
            os.chown(p, 0, 65534)
            os.chmod(p, 0o660 if p.is_file() else 0o2770)
    os.chown(env.tmp / "state", 0, 65534)
    os.chmod(env.tmp / "state", 0o2770)
    os.chmod(env.conf, 0o644)
    parents = [q for q in env.tmp.parents if str(q).startswith("/tmp/")]
    modes = {q: q.stat().st_mode for q in parents}
    try:
        for q in parents:
            os.chmod(q, modes[q] | 0o005)
        run = lambda *a: subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(MATRIXCTL),
             "-c", str(env.conf), *a], input=dsn, capture_output=True, text=True, timeout=60)
        p = run("--json", "bounce", "--dry-run")
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert d["kind"] == "hard" and d["delivery"] is None
        assert "daemon's user" in p.stderr
        assert run("bounce").returncode == 75
    finally:
        for q in parents:
            os.chmod(q, modes[q])


def test_bounce_never_makes_the_secret(env):
    """The secret is the daemon's: a bounce piped in before the daemon ever ran
    (or by an admin as root) must not create it, or the daemon's user could
    find one it cannot read. Without it no token verifies; the report is
    still read."""
    env.ctl("subscribe", "gone@example.org", check=0)
    publish(env)
    dsn = dsn_for(delivered(env)[0], "gone@example.org")
    secret = env.tmp / "state" / "secret"
    secret.unlink()
    p = env.ctl("bounce", input=dsn)
    assert p.returncode == 0, p.stderr
    assert not secret.exists()
    secret.mkdir()  # unreadable for another reason: the MTA retries later
    assert env.ctl("bounce", input=dsn).returncode == 75
