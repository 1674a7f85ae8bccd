"""docs/postfix.md for real: a private Postfix instance (its own config and
queue directories, smtpd on a free 127.0.0.1 port, no other address) set up
as the document says, with the pipe transport running the built matrixctl
as an unprivileged user. matrixd sends through it; Postfix relays to a
subscriber's MX (aiosmtpd on 127.0.0.1, which refuses one address) and to
an MX that is down, writes its own DSNs and pipes them back; a reader's Bcc
unsubscribe mail is piped too. Nothing leaves the machine:
default_transport = error for every domain the test does not route.

Skipped, saying why, where Postfix cannot be run (not root, not installed).
"""
import email
import email.policy
import os
import pathlib
import re
import shutil
import smtplib
import sqlite3
import subprocess
import tempfile
import time

import pytest

from conftest import DATA, MATRIXCTL, Env
from smtpd import Rule, Server, free_port

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
DOMAIN = "news.example.org"
PIPE_USER = "nobody"  # the doc says matrixd; a test machine may have no such user


def postfix_missing():
    if os.geteuid() != 0:
        return "Postfix runs its master as root: run the tests as root"
    if not os.path.exists(POSTFIX):
        return "Postfix is not installed (scripts/deps.sh check installs it)"
    try:
        import pwd, grp
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
        pwd.getpwnam(PIPE_USER)
    except KeyError as e:
        return f"user or group missing: {e}"
    return None


class Postfix:
    """One private instance; main.cf and master.cf as docs/postfix.md has
    them, plus what a test machine needs (its own directories, loopback
    only, every other domain bounced or kept by this instance)."""

    def __init__(self, base, conf, local_domain, remote_port):
        self.base = base
        self.etc, self.queue, self.data = (base / n for n in ("etc", "queue", "data"))
        for d in (base, self.etc, self.queue, self.data, base / "mailbox"):
            d.mkdir(mode=0o755)
        shutil.chown(self.data, "postfix")
        shutil.chown(base / "mailbox", PIPE_USER)
        self.port = free_port()
        self.log = base / "maillog"
        # the document's part
        doc = f"""
recipient_delimiter = +
transport_maps = regexp:{self.etc}/matrixd_transport
matrixd_destination_recipient_limit = 1
"""
        if local_domain:
            doc += f"mydestination = {DOMAIN}\nalias_maps = hash:{self.etc}/aliases\n"
        else:
            doc += f"relay_domains = {DOMAIN}\nmydestination =\nalias_maps =\n"
        # The world outside, all on this machine: the subscribers' MX (an
        # aiosmtpd that refuses gone@), an MX that is down (a closed port),
        # the reader's mailbox (a file). Anything else: default_transport.
        (self.etc / "matrixd_transport").write_text(
            r"/^(bounces|unsubscribe)\+[^@]*@news\.example\.org$/   matrixd:" + "\n"
            rf"/@remote\.example\.net$/   smtp:[127.0.0.1]:{remote_port}" + "\n"
            rf"/@down\.example\.net$/   smtp:[127.0.0.1]:{free_port()}" + "\n"
            r"/@reader\.example\.net$/   mailbox:" + "\n")
        (self.etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = error:5.1.1 mailbox unavailable
relay_transport = error:5.1.1 mailbox unavailable
smtp_tls_security_level = none
smtp_connect_timeout = 5s
alias_database =
maillog_file = {self.log}
maillog_file_prefixes = {self.base}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 1s
maximal_queue_lifetime = 0
delay_warning_time = 0
smtpd_banner = $myhostname ESMTP
{doc}""")
        if local_domain:
            self.aliases("postmaster:   /dev/null\n")  # not yet the document's
        # master.cf: Debian's services, nothing chrooted (the queue is ours),
        # smtpd on our port only, and the document's pipe transport
        out = []
        for line in pathlib.Path("/etc/postfix/master.cf").read_text().splitlines():
            f = line.split()
            if line[:1].isalnum() and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
                else:
                    f[4] = "n"
                    line = " ".join(f)
            out.append(line)
        # the pipe's user must reach the binary: a build under /root (0700),
        # as in make fresh-check, it could not; a copy here it can
        ctl = base / "matrixctl"
        shutil.copy(MATRIXCTL, ctl)
        ctl.chmod(0o755)
        out.append("matrixd   unix  -       n       n       -       10      pipe\n"
                   f"  flags=DOR user={PIPE_USER} argv={ctl} -c {conf} bounce")
        out.append("mailbox   unix  -       n       n       -       1       pipe\n"
                   f"  flags=DOR user={PIPE_USER} argv=/usr/bin/tee -a {base}/mailbox/reader")
        (self.etc / "master.cf").write_text("\n".join(out) + "\n")
        shutil.copy("/etc/postfix/dynamicmaps.cf", self.etc)

    def aliases(self, text):
        (self.etc / "aliases").write_text(text)
        subprocess.run(["postalias", "-c", str(self.etc), str(self.etc / "aliases")],
                       check=True, capture_output=True)
        # A running smtpd notices a rebuilt table by its mtime, in whole
        # seconds: one rebuilt in the second it was opened would go unseen
        # (and an alias just added be refused), so the rebuilt one is dated
        # apart from any earlier.
        db = self.etc / "aliases.db"
        t = time.time() + 2
        os.utime(db, (t, t))

    def wait_accepts(self, rcpt, seconds=20):
        """Until smtpd takes RCPT TO:<rcpt> (no mail is sent): a rebuilt
        table reaches a running smtpd when it next accepts a connection,
        and once, in a fresh chroot, that was later than its mtime said."""
        deadline = time.time() + seconds
        while True:
            s = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
            try:
                s.ehlo("probe.example.net")
                s.mail("probe@probe.example.net")
                code, reply = s.rcpt(rcpt)
            finally:
                s.quit()
            if code == 250:
                return
            assert time.time() < deadline, (code, reply, self.logtext())
            time.sleep(0.2)

    def postfix(self, *args):
        return subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=60)

    def start(self):
        p = self.postfix("start")
        assert p.returncode == 0, (p.stdout, p.stderr, self.logtext())
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                smtplib.SMTP("127.0.0.1", self.port, timeout=5).quit()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("Postfix's smtpd never answered:\n" + self.logtext())

    def stop(self):
        self.postfix("stop")
        pid = self.data / "master.lock"
        deadline = time.time() + 10
        while pid.exists() and time.time() < deadline:
            try:
                os.kill(int(pid.read_text().split()[0]), 0)
            except (OSError, ValueError, IndexError):
                break
            time.sleep(0.2)

    def logtext(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(what, cond, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def base():
    """A directory the pipe's unprivileged user can reach (pytest's own
    tmp_path is root's 0700)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="matrixd-postfix-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def remote_mx(base):
    """The subscribers' mail server: refuses gone@ at RCPT, as a real one
    would; Postfix then writes its DSN with the MX's words."""
    (base / "tls").mkdir()
    srv = Server(base / "tls", tls=False, auth=False).start()
    srv.rules.append(Rule(rcpt="gone@remote.example.net",
                          reply="550 5.1.1 <gone@remote.example.net>: Recipient address "
                                "rejected: User unknown in virtual mailbox table"))
    yield srv
    srv.stop()


@pytest.mark.parametrize("local_domain", [False, True], ids=["relay_domains", "mydestination"])
def test_documented_postfix_setup(base, remote_mx, local_domain):
    why = postfix_missing()
    if why:
        pytest.skip(why)
    (base / "m").mkdir(mode=0o755)
    env = Env(base / "m")
    pf = Postfix(base / "pfx", env.conf, local_domain, remote_mx.port)
    env.write_conf(smtp_url=f'"smtp://127.0.0.1:{pf.port}"', smtp_tls='"off"',
                   smtp_return_path=f'"bounces+{{token}}@{DOMAIN}"', site_from=f'"Matrix <matrix@{DOMAIN}>"')
    for a in ("gone@remote.example.net", "slow@down.example.net",
              "reader@reader.example.net"):
        env.ctl("subscribe", a, check=0)
    # the pipe runs as PIPE_USER: the state is its (the daemon here is
    # root), the secret too, made before the daemon would make it root's
    secret = env.tmp / "state" / "secret"
    secret.write_text(os.urandom(32).hex() + "\n")
    secret.chmod(0o600)
    for p in [env.tmp / "state", *(env.tmp / "state").iterdir()]:
        shutil.chown(p, PIPE_USER)
    env.conf.chmod(0o644)
    shutil.copy(DATA / "issues" / "single-63.md", env.tmp / "issues" / "matrix-063.md")
    pf.start()
    try:
        if local_domain:
            # a local DOMAIN refuses bounces+… and unsubscribe+… until
            # "bounces" and "unsubscribe" are local recipients
            s = smtplib.SMTP("127.0.0.1", pf.port, timeout=30)
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                s.sendmail("x@reader.example.net", [f"unsubscribe+1-1-00@{DOMAIN}"],
                           "Subject: x\r\n\r\nx\r\n")
            s.quit()
            assert "550" in str(refused.value) and "local recipient" in str(refused.value)
            pf.aliases("postmaster:   /dev/null\nbounces:      /dev/null\n"
                       "unsubscribe:  /dev/null\n")
            pf.wait_accepts(f"unsubscribe+0@{DOMAIN}")
        p = env.matrixd("--once", timeout=120)
        assert p.returncode == 0, p.stderr
        con = sqlite3.connect(env.db)
        state = lambda who: con.execute(
            "SELECT d.state, d.last_status, d.bounced_at IS NOT NULL FROM deliveries d "
            "JOIN subscribers s ON s.id = d.subscriber_id WHERE s.email = ?", (who,)).fetchone()
        # Postfix took each message (250), then bounced two of them with
        # its own DSN, which came back through the pipe
        gone = wait_for("the DSN for gone@", lambda: state("gone@remote.example.net")[0] ==
                        "failed" and state("gone@remote.example.net"))
        assert gone[1] == "5.1.1" and gone[2]
        assert remote_mx.count() == 0
        slow = wait_for("the expiry DSN for slow@",
                        lambda: state("slow@down.example.net")[0] == "failed" and
                        state("slow@down.example.net"))
        assert slow[1] == "4.4.1" and slow[2]  # Action: failed, Status: 4.4.1
        assert state("reader@reader.example.net")[0] == "sent"
        log = pf.logtext()
        assert re.search(r"to=<bounces\+[^>]+@news\.example\.org>, relay=matrixd.*"
                         r"status=sent \(delivered via matrixd service \(hard ", log), log
        for who in ("gone@remote.example.net", "slow@down.example.net"):
            show = env.ctl_json("show", who)
            assert show["memberships"][0]["bounce_score"] == 1, show
            assert show["memberships"][0]["status"] == "confirmed"
            assert show["events"][-1]["kind"] == "bounce"

        # the reader got the issue; unsubscribes by mail, as Bcc: the To:
        # names someone else, only the envelope has our address
        mbox = wait_for("the reader's mail", lambda: (base / "pfx" / "mailbox" /
                                                      "reader").exists() and
                        (base / "pfx" / "mailbox" / "reader").read_bytes())
        m = email.message_from_bytes(mbox, policy=email.policy.default)
        mailto = re.search(r"<mailto:([^>]+)>", m["List-Unsubscribe"]).group(1)
        assert mailto.startswith("unsubscribe+") and mailto.endswith("@" + DOMAIN)
        s = smtplib.SMTP("127.0.0.1", pf.port, timeout=30)
        s.sendmail("reader@reader.example.net", [mailto],
                   "From: reader@reader.example.net\r\nTo: friend@elsewhere.example.com\r\n"
                   "Subject: unsubscribe\r\nMessage-ID: <u1@reader.example.net>\r\n\r\n"
                   "please\r\n")
        s.quit()
        wait_for("the unsubscribe", lambda: env.ctl_json(
            "show", "reader@reader.example.net")["memberships"][0]["status"] == "unsubscribed")
        assert re.search(r"to=<unsubscribe\+[^>]+>, relay=matrixd.*status=sent", pf.logtext())
        con.close()
    finally:
        pf.stop()
