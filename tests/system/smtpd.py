"""A real SMTP server for the system tests: aiosmtpd on 127.0.0.1 (a free
port), with STARTTLS (a throw-away CA and certificate made by openssl) and
AUTH, recording every message it accepts, and able to misbehave on cue:

    srv.rules.append(Rule(rcpt="x@example.org", reply="451 4.7.1 try later", times=1))
    srv.rules.append(Rule(rcpt="y@example.org", reply="550 5.1.1 no such user"))
    srv.drop_after_data = {"z@example.org"}   # close instead of answering the dot, once
    srv.delay = 3                              # hold every 250 back (srv.arrived has them)
    Server(tmp, smtputf8=True)                 # offer SMTPUTF8 (RFC 6531) in EHLO

Greeting421 is a separate tiny server that answers every connection with
421 and hangs up.
"""
import asyncio
import dataclasses
import email
import email.policy
import pathlib
import socket
import ssl
import subprocess
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USER, PASSWORD = "matrix", "s3cret-pässword"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_cert(d):
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    d = pathlib.Path(d)
    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr",
                                                 "srv.pem"))
    if crt.exists():
        return ca, crt, key
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
        "-out", ca, "-days", "2", "-subj", "/CN=matrixd test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=127.0.0.1")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


@dataclasses.dataclass
class Rule:
    rcpt: str
    reply: str
    times: int = -1  # -1: always
    stage: str = "rcpt"  # rcpt | data


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpts: list
    data: bytes
    tls: bool
    auth: bool
    at: float = dataclasses.field(default_factory=time.time)
    smtputf8: bool = False  # MAIL FROM carried SMTPUTF8

    def message(self):
        return email.message_from_bytes(self.data, policy=email.policy.strict)


class Handler:
    def __init__(self, srv):
        self.srv = srv

    async def handle_RCPT(self, server, session, envelope, address, options):
        r = self.srv.match(address, "rcpt")
        if r:
            return r
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.srv.drop_after_data:
                self.srv.drop_after_data.discard(rcpt)  # once per address
                self.srv.dropped.append(rcpt)
                # the message arrived; the reply never does (the duplicate case)
                self.srv.received_dropped.append(Received(
                    envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                    session.ssl is not None, bool(session.authenticated)))
                server.transport.close()
                return "250 never sent"
            r = self.srv.match(rcpt, "data")
            if r:
                return r
        if self.srv.delay:
            # the message is in; its 250 is held back (a bounce can come first)
            self.srv.arrived.append(Received(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                session.ssl is not None, bool(session.authenticated)))
            await asyncio.sleep(self.srv.delay)
        with self.srv.lock:
            self.srv.received.append(Received(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                session.ssl is not None, bool(session.authenticated),
                smtputf8=envelope.smtp_utf8))
            n = len(self.srv.received)
        return f"250 2.0.0 Ok: queued as Q{n}"


class _Controller(Controller):
    """Remembers the socket of every connection, so that stop() can close
    them as a relay that stops does: aiosmtpd's own stop() only stops its
    loop, which leaves the open connections hanging until garbage collection
    and a client waiting for an answer that never comes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sockets = set()
        self.peers = set()  # (address, port) of every connection accepted

    def factory(self):
        ctl = self

        class Tracked(SMTP):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    ctl.sockets.add(sock)
                    # called once more after STARTTLS, on the same socket
                    ctl.peers.add(sock.getpeername())
                self._tracked = sock
                super().connection_made(transport)

            def connection_lost(self, exc):
                ctl.sockets.discard(getattr(self, "_tracked", None))
                super().connection_lost(exc)

        return Tracked(self.handler, **self.SMTP_kwargs)


class Server:
    def __init__(self, tmp, tls=True, auth=True, require_tls=False, port=None, password=PASSWORD,
                 smtputf8=False):
        self.port = port or free_port()
        self.received, self.received_dropped, self.dropped = [], [], []
        self.arrived = []  # with delay: messages whose reply is still held back
        self.rules, self.drop_after_data = [], set()
        self.delay = 0
        self.lock = threading.Lock()
        self.logins = []
        ca, crt, key = make_cert(tmp)
        self.ca = ca
        ctx = None
        if tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(crt, key)
        self.password = password

        def authenticator(server, session, envelope, mechanism, data):
            ok = isinstance(data, LoginPassword) and data.login.decode() == USER and \
                data.password.decode() == self.password
            self.logins.append((mechanism, ok))
            return AuthResult(success=ok, handled=False)

        kwargs = dict(tls_context=ctx, require_starttls=require_tls and tls,
                      auth_required=auth, auth_require_tls=tls, authenticator=authenticator,
                      enable_SMTPUTF8=smtputf8)
        if not auth:
            kwargs.pop("authenticator")
        self.controller = _Controller(Handler(self), hostname="127.0.0.1", port=self.port,
                                     ready_timeout=10, server_kwargs=kwargs)


    def match(self, address, stage):
        with self.lock:
            for r in self.rules:
                if r.rcpt == address and r.stage == stage and r.times != 0:
                    if r.times > 0:
                        r.times -= 1
                    return r.reply
        return None

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        """Stop as a relay's process does: the open connections closed too."""
        self.controller.stop()
        for sock in self.controller.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already
        self.controller.sockets.clear()

    def to(self, rcpt):
        return [m for m in self.received if rcpt in m.rcpts]

    @property
    def connections(self):
        """How many connections the server accepted in all."""
        return len(self.controller.peers)

    def count(self):
        with self.lock:
            return len(self.received)


class Greeting421:
    """Answers every connection with 421 and closes it."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.connections = 0
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                c.sendall(b"421 4.3.2 Service not available, closing channel\r\n")
            finally:
                c.close()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopped = True
        self.sock.close()
