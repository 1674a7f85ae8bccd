"""What a careless or hostile admin does to the relays while mail goes out:
a SIGHUP with another smtp.relays list in the middle of a send, a relay
url that carries a password, a relay that refuses for a moment, a relay
that takes seconds to say it is down.
Against the real daemon and real aiosmtpd relays on 127.0.0.1."""
import re
import shutil
import signal
import socket
import threading
import time

from smtpd import Rule, Server, free_port
from test_daemon import Daemon, wait_for
from test_delivery import smtp_env
from test_relays import TOC, import_readers, relays_env


def test_reload_with_other_relays_keeps_the_running_ones(tmp_path):
    """The relays are connections, threads and passwords made at start: a
    reload that changes them says they need a restart, and until then the
    daemon (its status too) goes on with the running ones. A reload to a
    shorter list once made the status read past the end of the new one."""
    (tmp_path / "tls").mkdir()
    a, b, c = (Server(tmp_path / "tls").start() for _ in range(3))
    try:
        a.delay = b.delay = 0.02  # long enough for the reload to land mid-send
        env = relays_env(tmp_path, [a.port, b.port])
        import_readers(env, 100)
        d = Daemon(env)
        try:
            assert d.wait_log("ready:"), d.stderr()
            shutil.copy(TOC, env.tmp / "issues" / TOC.name)
            assert wait_for(lambda: a.count() + b.count() >= 10, 30), d.stderr()
            old = [f"smtp://127.0.0.1:{p}" for p in (a.port, b.port)]
            # same count, another relay: the status must not name c
            text = env.conf.read_text()
            env.conf.write_text(text.replace(f"127.0.0.1:{b.port}", f"127.0.0.1:{c.port}"))
            d.p.send_signal(signal.SIGHUP)
            assert d.wait_log("restart matrixd for them to take effect"), d.stderr()
            # one relay only: the status once read a second, absent one
            env.conf.write_text(re.sub(r"relays = \(.*\);",
                                       f'relays = ( {{ url = "smtp://127.0.0.1:{c.port}"; }} );',
                                       text))
            d.p.send_signal(signal.SIGHUP)
            assert wait_for(lambda: d.stderr().count("restart matrixd for them") == 2, 30), \
                d.stderr()
            assert wait_for(lambda: a.count() + b.count() >= 400 or d.p.poll() is not None,
                            60), d.stderr()
            assert d.p.poll() is None, d.stderr()
            assert wait_for(lambda: env.ctl_json("status")["issues"][0]["sent"] == 400, 30)
            relays = env.ctl_json("status")["daemon"]["relays"]
            assert [r["url"] for r in relays] == old, relays
            assert wait_for(lambda: sum(r["sent"] for r in env.ctl_json("status")["daemon"]
                                        ["relays"]) == 400, 10), env.ctl("status").stdout
            assert c.count() == 0
            pairs = {(r.rcpts[0], r.message()["Subject"]) for r in a.received + b.received}
            assert len(pairs) == 400
            assert f"127.0.0.1:{c.port}" not in env.ctl("status", check=0).stdout
            assert d.term()[0] == 0, d.stderr()
        finally:
            d.kill()
    finally:
        for s in (a, b, c):
            s.stop()



def test_smtp_url_with_a_password_is_refused(env):
    """smtp.url follows the rule of a relay group's url: credentials go in
    username and password_file, never in the url, which the log, the
    status and STATUS= all print."""
    for url in ("smtp://mailer:s3cr3t@127.0.0.1:25", "smtps://mailer@127.0.0.1:465"):
        env.write_conf(smtp_url=f'"{url}"')
        p = env.matrixd("-n")
        assert p.returncode == 1, (url, p.stdout)
        line = env.conf.read_text().splitlines().index(f'  url = "{url}";') + 1
        assert f"{env.conf}:{line}: smtp.url must not hold a user or password" in p.stderr, \
            p.stderr
        assert "password_file" in p.stderr
        assert "s3cr3t" not in p.stderr + p.stdout
        # the daemon does not start with it either
        p = env.matrixd("--once")
        assert p.returncode == 1 and "s3cr3t" not in p.stderr, p.stderr


def test_a_moment_of_421s_pauses_the_relay_once(tmp_path):
    """A relay that answers 421 for a moment (Postfix at its connection
    limit) is paused: the messages it held fail one after the other, and
    each result once doubled the pause, so that one blip stopped the send
    for 300 s. The pause grows only when the relay still refuses after it."""
    (tmp_path / "tls").mkdir()
    a = Server(tmp_path / "tls").start()
    try:
        env = smtp_env(tmp_path, a)
        import_readers(env, 30)
        for i in range(30):  # each reader's first transaction, once
            a.rules.append(Rule(f"r{i}@example.org", "421 4.7.0 Error: too many connections",
                                times=1))
        d = Daemon(env)
        try:
            assert d.wait_log("ready:"), d.stderr()
            t = time.time()
            shutil.copy(TOC, env.tmp / "issues" / TOC.name)
            assert wait_for(lambda: a.count() == 120, 90), \
                (a.count(), [line for line in d.stderr().splitlines() if "pausing" in line])
            print(f"120 messages {time.time() - t:.1f} s after the blip")
            pauses = re.findall(r"pausing (\d+) s", d.stderr())
            assert pauses and max(map(int, pauses)) <= 10, pauses
            st = env.ctl_json("status")["issues"][0]
            assert st["sent"] == 120 and st["deferred"] == 0 and st["failed"] == 0, st
            assert len({(r.rcpts[0], r.message()["Subject"]) for r in a.received}) == 120
            assert d.term()[0] == 0, d.stderr()
        finally:
            d.kill()
    finally:
        a.stop()


def test_site_from_no_message_can_carry_is_refused_at_the_check(env):
    """Every message's From is built from site.from: one that does not parse
    as an address, or whose local part needs SMTPUTF8 (an 8-bit header),
    once passed `matrixd -n` and then stopped every message."""
    for value, why in (('"矩阵 <新闻@example.org>"', "with an ASCII local part"),
                       ('"Matrix <bad address@example.org>"', "contains a space")):
        env.write_conf(site_from=value)
        p = env.matrixd("-n")
        assert p.returncode == 1, value
        line = env.conf.read_text().splitlines().index(f"  from = {value};") + 1
        assert f"{env.conf}:{line}: site.from must be an address" in p.stderr, p.stderr
        assert why in p.stderr, p.stderr
    env.write_conf(site_from='"矩阵 <news@例子.测试>"')  # an IDN domain is fine (A-labels)
    p = env.matrixd("-n")
    assert p.returncode == 0, p.stderr


class SlowRefusal:
    """A relay that takes `delay` seconds to answer each connection with 421,
    as a host that is going down (or one behind a dropping firewall, at
    the connect timeout) does."""

    def __init__(self, delay):
        self.delay, self.connections, self.stopped = delay, 0, False
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.answer, args=(c,), daemon=True).start()

    def answer(self, c):
        time.sleep(self.delay)
        try:
            c.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
        except OSError:
            pass
        c.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


def test_a_paused_relay_gives_back_the_messages_it_had_not_started(tmp_path):
    """Once a relay is paused, the messages waiting in its queue go to the
    other relay at once. Its threads once tried each of them in turn, a
    slow failure each (5 per connection: 5 x the connect timeout, 150 s,
    for a relay that drops packets), all while it was 'paused'."""
    (tmp_path / "tls").mkdir()
    slow = SlowRefusal(3)
    good = Server(tmp_path / "tls").start()
    try:
        env = relays_env(tmp_path, [slow.port, good.port], connections=2)
        import_readers(env, 10)
        shutil.copy(TOC, env.tmp / "issues" / TOC.name)
        t = time.time()
        p = env.matrixd("--once")
        took = time.time() - t
        assert p.returncode == 0, p.stderr
        print(f"40 messages in {took:.1f} s; {slow.connections} connections to the slow relay")
        assert good.count() == 40
        assert len({(r.rcpts[0], r.message()["Subject"]) for r in good.received}) == 40
        # one refusal per connection, then its queue went to the other relay
        assert slow.connections <= 2, slow.connections
        assert took < 12, took
        st = env.ctl_json("status")["issues"][0]
        assert st["sent"] == 40 and st["deferred"] == 0 and st["failed"] == 0, st
    finally:
        slow.stop()
        good.stop()
