"""Scheduled issues (front matter send_at): nothing public or queued before
the time, exactly once after it, across a restart; a schedule missed by
more than schedule_grace is held until `matrixctl release`; a changed
send_at reschedules, a removed file cancels; bad send_at values are
FILE:LINE errors. Against the real daemon and a real SMTP server."""
import datetime
import time

from test_daemon import Daemon, wait_for
from test_delivery import smtp_conf, smtp_env, subscribe


def stamp(t, offset_hours=0):
    """t as the front matter writes it, in a zone offset_hours east of UTC."""
    tz = datetime.timezone(datetime.timedelta(hours=offset_hours))
    d = datetime.datetime.fromtimestamp(int(t), tz)
    sign = "+" if offset_hours >= 0 else "-"
    return d.strftime("%Y-%m-%d %H:%M:%S ") + f"{sign}{abs(offset_hours):02d}:00"


def issue_text(number, send_at=None, articles=3, extra=""):
    fm = f"---\ntitle: Matrix NO.{number}\nnumber: {number}\n"
    if send_at:
        fm += f"send_at: {send_at}\n"
    fm += extra + "---\n\n"
    body = "".join(f"# Article {k} of {number}\n\nText of article {k}.\n\n"
                   for k in range(1, articles + 1))
    return fm + body


def write_issue(env, name, text):
    tmp = env.tmp / "issues" / f".{name}.tmp"
    tmp.write_text(text)
    tmp.rename(env.tmp / "issues" / name)


def issue_status(env, number):
    for i in env.ctl_json("status")["issues"]:
        if i["number"] == number:
            return i
    return None


def nothing_public(env, number):
    pub = env.tmp / "public"
    feed = (pub / "atom.xml").read_text() if (pub / "atom.xml").exists() else ""
    index = (pub / "index.html").read_text() if (pub / "index.html").exists() else ""
    return (not (pub / "issues" / str(number)).exists() and f"issues/{number}/" not in feed
            and f"issues/{number}/" not in index)


def test_send_at_ahead_survives_a_restart_and_sends_once(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org", "bob@example.org")
    subscribe(env, "dig@example.org", mode="digest")
    send_at = int(time.time()) + 7
    write_issue(env, "n70.md", issue_text(70, stamp(send_at, 8)))
    d = Daemon(env)
    try:
        assert d.wait_log("issue=70 scheduled for"), d.stderr()
        st = issue_status(env, 70)
        assert st["status"] == "scheduled"
        assert st["send_at"] == datetime.datetime.fromtimestamp(send_at).astimezone() \
            .isoformat()
        assert st["queued"] == 0 and st["sent"] == 0
        text = env.ctl("status", check=0).stdout
        assert "scheduled 20" in text
        # rendered for the editors only
        assert (env.tmp / "state" / "preview" / "issues" / "70" / "index.html").exists()
        assert nothing_public(env, 70)
        rc, _ = d.term()
        assert rc == 0, d.stderr()
    finally:
        d.kill()
    assert server.count() == 0 and time.time() < send_at - 1, "too slow to test a restart"
    d = Daemon(env)
    try:
        assert d.wait_log("ready:"), d.stderr()
        assert issue_status(env, 70)["status"] == "scheduled"
        assert wait_for(lambda: server.count() >= 7, send_at - time.time() + 10), d.stderr()
        time.sleep(1.5)
        assert server.count() == 7  # 3 articles x 2 + 1 digest, each once
        pairs = {(r.rcpts[0], r.message()["Subject"]) for r in server.received}
        assert len(pairs) == 7
        first = min(r.at for r in server.received)
        assert first >= send_at, (first, send_at)
        print(f"first message {first - send_at:.2f} s after send_at")
        assert first < send_at + 3
        st = issue_status(env, 70)
        assert st["status"] == "publish" and st["sent"] == 7
        assert (env.tmp / "public" / "issues" / "70" / "index.html").exists()
        assert "issues/70/" in (env.tmp / "public" / "atom.xml").read_text()
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_missed_schedule_is_held_until_release(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    three_days_ago = int(time.time()) - 3 * 86400
    write_issue(env, "n71.md", issue_text(71, stamp(three_days_ago, -5)))
    d = Daemon(env)
    try:
        assert d.wait_log("issue=71 held"), d.stderr()
        assert "matrixctl release 71" in d.stderr()
        time.sleep(1.0)
        assert server.count() == 0
        assert issue_status(env, 71)["status"] == "held"
        assert nothing_public(env, 71)
        text = env.ctl("status", check=0).stdout
        assert "issue 71 is held" in text and "matrixctl release 71" in text
        # what cannot be released says why
        p = env.ctl("release", "99")
        assert p.returncode == 1 and "no issue number 99" in p.stderr
        assert env.ctl("release", "x").returncode == 2
        t = time.time()
        p = env.ctl("release", "71", check=0)
        assert "released issue 71" in p.stdout
        assert wait_for(lambda: server.count() == 3, 5), d.stderr()
        print(f"released issue at the relay {time.time() - t:.2f} s after release")
        time.sleep(1.0)
        assert server.count() == 3
        st = issue_status(env, 71)
        assert st["status"] == "publish" and st["sent"] == 3
        assert not nothing_public(env, 71)
        p = env.ctl("release", "71")
        assert p.returncode == 1 and "already sent" in p.stderr
        assert d.term()[0] == 0
    finally:
        d.kill()
    # a restart sends nothing again
    p = env.matrixd("--once")
    assert p.returncode == 0, p.stderr
    assert server.count() == 3


def test_changed_send_at_reschedules_and_removed_file_cancels(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    now = int(time.time())
    write_issue(env, "n72.md", issue_text(72, stamp(now + 600)))
    write_issue(env, "n73.md", issue_text(73, stamp(now + 5)))
    d = Daemon(env)
    try:
        assert d.wait_log("issue=72 scheduled") and d.wait_log("issue=73 scheduled")
        sooner = int(time.time()) + 3
        write_issue(env, "n72.md", issue_text(72, stamp(sooner, 2)))
        (env.tmp / "issues" / "n73.md").unlink()
        assert d.wait_log("schedule is cancelled"), d.stderr()
        assert wait_for(lambda: server.count() >= 3, 15), d.stderr()
        assert min(r.at for r in server.received) >= sooner
        time.sleep(now + 7 - time.time())  # past issue 73's old time
        subjects = {r.message()["Subject"] for r in server.received}
        assert server.count() == 3 and all("of 72" in s for s in subjects), subjects
        assert issue_status(env, 73) is None
        assert nothing_public(env, 73)
        # a send_at removed: an ordinary issue, out at once
        write_issue(env, "n74.md", issue_text(74, stamp(time.time() + 600)))
        assert d.wait_log("issue=74 scheduled")
        write_issue(env, "n74.md", issue_text(74))
        assert wait_for(lambda: server.count() == 6, 10), d.stderr()
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_a_stopped_daemon_sends_a_missed_schedule_within_the_grace(tmp_path, server):
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    write_issue(env, "n75.md", issue_text(75, stamp(time.time() + 600)))
    p = env.matrixd("--once")
    assert p.returncode == 0 and "issue=75 scheduled" in p.stderr, p.stderr
    assert server.count() == 0
    # an hour after its time (within the day of grace): it goes out
    p = env.matrixd("--once", env={"MATRIXD_FAKE_NOW": str(int(time.time()) + 4200)})
    assert p.returncode == 0, p.stderr
    assert server.count() == 3
    # with a grace of 10 minutes the same lateness would have held it
    write_issue(env, "n76.md", issue_text(76, stamp(time.time() + 600)))
    env.write_conf(**smtp_conf(env, server), schedule_grace="600")
    p = env.matrixd("--once", env={"MATRIXD_FAKE_NOW": str(int(time.time()) + 4200)})
    assert p.returncode == 0, p.stderr
    assert "issue=76 held" in p.stderr
    assert server.count() == 3


def test_bad_send_at_is_a_file_line_error(env):
    f = env.tmp / "bad.md"
    for value, why in (("2022-04-15 08:00", "no offset"), ("tomorrow", "must be a date"),
                       ("2022-02-30 08:00 +08:00", "must be a date"),
                       ("2022-04-15 25:00 Z", "must be a date")):
        f.write_text(issue_text(77, value))
        p = env.ctl("inspect", f)
        assert p.returncode == 1, value
        assert f"{f}:4: send_at '{value}'" in p.stderr and why in p.stderr, p.stderr
    # the daemon records it like every other front-matter error, sends nothing
    (env.tmp / "issues" / "bad.md").write_text(issue_text(77, "2022-04-15 08:00"))
    p = env.matrixd("--once")
    assert p.returncode == 1
    errs = env.ctl_json("status")["errors"]
    assert errs and ":4: send_at" in errs[0]["error"]


def test_bare_date_is_midnight_in_site_timezone(env, tmp_path):
    f = tmp_path / "d.md"
    f.write_text(issue_text(78, "2030-04-15"))
    env.write_conf(site_timezone='"Asia/Shanghai"')
    assert env.ctl_json("inspect", f)["send_at"] == "2030-04-15T00:00:00+08:00"
    env.write_conf(site_timezone='"America/New_York"')
    assert env.ctl_json("inspect", f)["send_at"] == "2030-04-15T00:00:00-04:00"
    f.write_text(issue_text(78, "2030-04-15T08:30Z"))
    assert env.ctl_json("inspect", f)["send_at"] == "2030-04-15T04:30:00-04:00"
    env.write_conf(site_timezone='"Mars/Olympus_Mons"')
    p = env.matrixd("-n")
    assert p.returncode == 1
    line = env.conf.read_text().splitlines().index('  timezone = "Mars/Olympus_Mons";') + 1
    assert f"{env.conf}:{line}: site.timezone" in p.stderr, p.stderr


def test_renumbered_scheduled_issue_leaves_no_ghost(tmp_path, server):
    """A scheduled issue whose file now says another number is that number:
    the old one's schedule goes with the old content. It once stayed in
    `matrixctl status` as scheduled and, at its time, was retried every
    minute as an issue that 'could not be published'."""
    env = smtp_env(tmp_path, server)
    subscribe(env, "ann@example.org")
    send_at = int(time.time()) + 5
    write_issue(env, "n.md", issue_text(80, stamp(send_at)))
    d = Daemon(env)
    try:
        assert d.wait_log("issue=80 scheduled"), d.stderr()
        write_issue(env, "n.md", issue_text(81, stamp(send_at)))
        assert d.wait_log("issue=81 scheduled"), d.stderr()
        assert wait_for(lambda: issue_status(env, 80) is None, 10), env.ctl("status").stdout
        assert wait_for(lambda: server.count() >= 3, send_at - time.time() + 15), d.stderr()
        assert all("of 81" in r.message()["Subject"] for r in server.received)
        time.sleep(1.5)
        assert server.count() == 3
        assert issue_status(env, 81)["sent"] == 3
        assert "could not be published" not in d.stderr()
        assert not (env.tmp / "public" / "issues" / "80").exists()
        assert d.term()[0] == 0
    finally:
        d.kill()
