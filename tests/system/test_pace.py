"""Paced lists (list-create/list-set --pace): a reader of a paced list gets
article k at the issue's send time + (k - 1) x pace, in the order of the
table of contents, across a kill -9 and a restart, never twice; digest
readers at once; a relay that was down past several articles' times gets
them in order when it is back. Against the real daemon and a real SMTP
server."""
import re
import time

from smtpd import Server, free_port, make_cert
from test_daemon import Daemon, wait_for
from test_delivery import smtp_env, subscribe
from test_schedule import issue_text, write_issue

PACE = 2


def article_no(msg):
    m = re.match(r"Article (\d+) of", msg.message()["Subject"])
    return int(m.group(1)) if m else 0  # 0: the digest


def test_list_pace_commands(env):
    assert env.ctl_json("list-create", "slow", "--pace", "90s")["pace"] == 90
    lists = {l["name"]: l for l in env.ctl_json("lists")}
    assert lists["slow"]["pace"] == 90 and lists["matrix"]["pace"] == 0
    assert "1m30s" in env.ctl("lists", check=0).stdout
    p = env.ctl("list-set", "slow", "--pace", "3h", check=0)
    assert "pace 3h" in p.stdout
    assert {l["name"]: l["pace"] for l in env.ctl_json("lists")}["slow"] == 3 * 3600
    env.ctl("list-set", "slow", "--title", "Slow", check=0)
    assert {l["name"]: l for l in env.ctl_json("lists")}["slow"]["pace"] == 3 * 3600  # kept
    for bad in ("fast", "90", "-1s", "31d", "1.5h"):
        p = env.ctl("list-set", "slow", "--pace", bad)
        assert p.returncode == 1 and "--pace" in p.stderr, (bad, p.stderr)
        assert env.ctl("list-create", "other", "--pace", bad).returncode == 1
    assert env.ctl("list-set", "nosuch", "--pace", "1d").returncode == 1
    assert env.ctl("list-set", "slow").returncode == 2  # nothing to change


def test_paced_list_in_order_across_kill_9(tmp_path, server):
    env = smtp_env(tmp_path, server)
    env.ctl("list-create", "slow", "--pace", f"{PACE}s", check=0)
    env.ctl("subscribe", "ann@example.org", "--list", "slow", check=0)
    env.ctl("subscribe", "dig@example.org", "--list", "slow", "--mode", "digest", check=0)
    subscribe(env, "fast@example.org")  # the default list, no pace
    d = Daemon(env)
    try:
        assert d.wait_log("ready:")
        write_issue(env, "n80.md", issue_text(80, articles=4))
        # the first article (and the digest, and the unpaced list) at once
        assert wait_for(lambda: len(server.to("ann@example.org")) == 1, 10), d.stderr()
        assert wait_for(lambda: len(server.to("dig@example.org")) == 1, 5), d.stderr()
        assert wait_for(lambda: len(server.to("fast@example.org")) == 4, 5), d.stderr()
        # kill -9 once the first is recorded: nothing in flight to duplicate
        assert wait_for(lambda: env.ctl_json("status")["issues"][0]["sent"] == 6, 5)
        st = env.ctl_json("status")["issues"][0]
        assert st["waiting"] == 3 and st["next_at"], st
        assert "wait for their time" in env.ctl("status", check=0).stdout
        d.kill()
    finally:
        d.kill()
    assert len(server.to("ann@example.org")) == 1, "the restart came too late to test"
    d = Daemon(env)
    try:
        assert wait_for(lambda: len(server.to("ann@example.org")) >= 4, 20), d.stderr()
        time.sleep(PACE + 0.5)
        got = server.to("ann@example.org")
        assert [article_no(r) for r in got] == [1, 2, 3, 4]  # in order, none twice
        t0 = got[0].at
        for k, r in enumerate(got, start=1):
            # the send time is a whole second at or before the first article
            assert r.at - t0 >= (k - 1) * PACE - 1.0, (k, r.at - t0)
            assert r.at - t0 < (k - 1) * PACE + 4.0, (k, r.at - t0)
        print("paced arrivals (s after the first):",
              " ".join(f"{r.at - t0:.2f}" for r in got))
        assert len(server.to("dig@example.org")) == 1
        assert len(server.to("fast@example.org")) == 4
        st = env.ctl_json("status")["issues"][0]
        assert st["sent"] == 9 and st["waiting"] == 0
        assert d.term()[0] == 0
    finally:
        d.kill()


def test_paced_mail_due_while_the_relay_was_down_goes_in_order(tmp_path):
    """The relay is down at the send time and for several articles' times:
    when it is back, each reader gets the articles in order, once, and
    smtp.rate holds (no burst)."""
    (tmp_path / "tls").mkdir()
    port = free_port()
    ca, _, _ = make_cert(tmp_path / "tls")  # the relay's, before it is up
    env = smtp_env(tmp_path, port=port, smtp_ca_file=f'"{ca}"', smtp_rate="4")
    env.ctl("list-create", "slow", "--pace", "1s", check=0)
    for who in ("a", "b", "c"):
        env.ctl("subscribe", f"{who}@example.org", "--list", "slow", check=0)
    d = Daemon(env)
    srv = None
    try:
        assert d.wait_log("ready:")
        write_issue(env, "n81.md", issue_text(81, articles=4))
        assert d.wait_log("pausing"), d.stderr()
        time.sleep(4)  # every article's time passes while the relay is down
        st = env.ctl_json("status")["issues"][0]
        assert st["sent"] == 0 and st["failed"] == 0 and st["deferred"] == 0, st
        srv = Server(tmp_path / "tls", port=port).start()
        assert wait_for(lambda: srv.count() == 12, 40), d.stderr()
        time.sleep(0.5)
        assert srv.count() == 12
        for who in ("a", "b", "c"):
            got = [article_no(r) for r in srv.to(f"{who}@example.org")]
            assert got == [1, 2, 3, 4], (who, got)
        at = sorted(r.at for r in srv.received)
        print(f"12 overdue messages at smtp.rate = 4 in {at[-1] - at[0]:.2f} s")
        # a token bucket of one second's worth: the k-th leaves no earlier
        # than (k - 4) / 4 s after the first; at the server, up to a second
        # less, as the first messages wait for their connection's TLS and
        # AUTH (all four connections are new after the pause) and the last
        # do not
        for k, t_k in enumerate(at, start=1):
            assert t_k - at[0] >= (k - 4) / 4 - 1.0, (k, t_k - at[0])
        st = env.ctl_json("status")["issues"][0]
        assert st["sent"] == 12 and st["deferred"] == 0
        assert d.term()[0] == 0
    finally:
        d.kill()
        if srv:
            srv.stop()
