"""DKIM: keys made by `matrixctl dkim-keygen`, every message signed by the
daemon (SMTP and Maildir) and by send-test, each signature checked by an
independent verifier (Debian's python3-dkim) whose DNS lookup is answered
from the records dkim-keygen printed; `matrixd -n` refusing bad keys."""
import email
import email.policy
import os
import re
import subprocess

import pytest

from conftest import SEED, Env
from test_delivery import drop_issue, once, smtp_conf, smtp_env, subscribe

dkim = pytest.importorskip("dkim", reason="python3-dkim (Debian) is needed to verify signatures")

# What every signature must cover (matrixd.conf(5), dkim; RFC 8058 §4 for the two
# List-Unsubscribe fields) and what is signed once more than it occurs.
SIGNED = {"from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
          "list-unsubscribe-post", "mime-version", "content-type"}
OVERSIGNED = ("from", "subject", "to")


def keygen(env, selector, *args):
    out = env.tmp / f"{selector}.pem"
    p = env.ctl("dkim-keygen", "--selector", selector, *args, "--out", out)
    assert p.returncode == 0, p.stderr
    return out, p.stdout


def record(line):
    """'S._domainkey.D. IN TXT "v=DKIM1; k=…; p=…"' -> (name, txt)."""
    m = re.fullmatch(r'(\S+\._domainkey\.\S+\.) IN TXT "(v=DKIM1; k=(rsa|ed25519); p=[A-Za-z0-9+/=]+)"\n',
                     line)
    assert m, line
    return m.group(1), m.group(2)


def dkim_conf(keys, domain=None):
    items = ", ".join(f'{{ selector = "{s}"; key_file = "{f}"; }}' for s, f in keys)
    d = f'domain = "{domain}"; ' if domain else ""
    return f"dkim = {{ {d}keys = ( {items} ); }};\n"


def add_dkim(env, keys, domain=None):
    env.conf.write_text(env.conf.read_text() + dkim_conf(keys, domain))


def signatures(raw):
    """The DKIM-Signature fields of a message, as tag dicts, in order."""
    m = email.message_from_bytes(raw, policy=email.policy.compat32)
    out = []
    for v in m.get_all("DKIM-Signature") or []:
        v = re.sub(r"\s+", "", v)
        out.append(dict(t.split("=", 1) for t in v.split(";") if t))
    return out


def verify_all(raw, dns):
    """Every signature of raw, checked on its own with python3-dkim."""
    d = dkim.DKIM(raw)
    n = len(signatures(raw))
    return [d.verify(idx=i, dnsfunc=lambda name, timeout=5: dns.get(name.decode()))
            for i in range(n)]


def test_signed_seed_verifies(tmp_path, server):
    env = smtp_env(tmp_path, server)
    rsa, rsa_rec = keygen(env, "rsa2026", "--type", "rsa", "--bits", "2048")
    ed, ed_rec = keygen(env, "ed2026", "--type", "ed25519")
    for f in (rsa, ed):
        assert os.stat(f).st_mode & 0o777 == 0o600
        assert f.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    dns = {}
    for line in (rsa_rec, ed_rec):
        name, txt = record(line)
        dns[name] = txt.encode()
    assert set(dns) == {"rsa2026._domainkey.example.org.", "ed2026._domainkey.example.org."}
    add_dkim(env, [("rsa2026", rsa), ("ed2026", ed)])
    p = env.matrixd("-n")
    assert p.returncode == 0, p.stderr
    assert "DKIM: 2 keys, d=example.org" in p.stdout
    subscribe(env, "ann@example.org")
    env.ctl("subscribe", "wang@example.org", "--name", "王伟", check=0)  # an encoded To:
    subscribe(env, "dig@example.org", mode="digest")
    drop_issue(env)
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert len(server.received) == 31
    for r in server.received:
        raw = r.data
        sigs = signatures(raw)
        assert [s["a"] for s in sigs] == ["rsa-sha256", "ed25519-sha256"]
        for s in sigs:
            assert s["d"] == "example.org"  # the From domain
            assert s["c"] == "relaxed/relaxed"
            h = s["h"].lower().split(":")
            assert SIGNED <= set(h), SIGNED - set(h)
            for name in OVERSIGNED:  # one more than the message has
                assert h.count(name) == 2, (name, h)
            assert "l" not in s  # the whole body
        assert verify_all(raw, dns) == [True, True], r.rcpts
        # a changed Subject breaks both
        bad = re.sub(rb"\r\nSubject: [^\r]*(\r\n[ \t][^\r]*)*", b"\r\nSubject: changed", raw, 1)
        assert bad != raw
        assert verify_all(bad, dns) == [False, False]
        # so does a second From added on the way (over-signing)
        added = b"From: someone@evil.example\r\n" + raw
        assert verify_all(added, dns) == [False, False]


def test_maildir_and_send_test_sign(tmp_path, server):
    env = Env(tmp_path)
    key, rec = keygen(env, "s1", "--type", "ed25519")
    name, txt = record(rec)
    dns = {name: txt.encode()}
    add_dkim(env, [("s1", key)])
    subscribe(env, "ann@example.org")
    drop_issue(env)
    assert once(env).returncode == 0
    files = sorted((env.tmp / "maildir" / "new").iterdir())
    assert len(files) == 15
    for f in files:
        raw = f.read_bytes()
        # a Maildir file is what a reader's server stores: LF or CRLF, the
        # signature is over the canonical CRLF form either way
        raw = re.sub(rb"\r?\n", b"\r\n", raw)
        assert verify_all(raw, dns) == [True], f
    # send-test signs too
    (tmp_path / "st").mkdir()
    env2 = smtp_env(tmp_path / "st", server)
    add_dkim(env2, [("s1", key)])
    p = env2.ctl("send-test", SEED, "--to", "test@example.org")
    assert p.returncode == 0, p.stderr
    got = server.to("test@example.org")
    assert len(got) == 15
    for r in got:
        assert verify_all(r.data, dns) == [True]


def test_dkim_domain_and_alignment_warning(tmp_path):
    env = Env(tmp_path)
    key, rec = keygen(env, "s1", "--type", "ed25519")
    add_dkim(env, [("s1", key)], domain="mail.example.net")
    p = env.matrixd("-n")
    assert p.returncode == 0, p.stderr
    assert "d=mail.example.net" in p.stdout
    assert "not aligned with example.org" in p.stderr
    # dkim-keygen names the configured domain
    _, rec2 = keygen(env, "s2", "--type", "ed25519")
    assert rec2.startswith("s2._domainkey.mail.example.net. IN TXT ")


def test_return_path_outside_from_domain_warns(tmp_path):
    env = Env(tmp_path, smtp_return_path='"bounces+{token}@bounce-host.example.com"')
    p = env.matrixd("-n")
    assert p.returncode == 0, p.stderr
    assert "smtp.return_path's domain bounce-host.example.com" in p.stderr
    env.write_conf(smtp_return_path='"bounces+{token}@bounces.example.org"')
    p = env.matrixd("-n")
    assert p.returncode == 0 and "return_path" not in p.stderr, p.stderr


def line_of(conf, needle):
    for i, l in enumerate(conf.read_text().splitlines(), 1):
        if needle in l:
            return i
    raise AssertionError(needle)


def test_check_refuses_bad_keys(tmp_path):
    env = Env(tmp_path)
    good, _ = keygen(env, "good", "--type", "rsa")
    # readable by others
    loose = env.tmp / "loose.pem"
    loose.write_bytes(good.read_bytes())
    loose.chmod(0o644)
    base = env.conf.read_text()
    env.conf.write_text(base + "dkim = {\n  keys = (\n    { selector = \"good\"; key_file = \""
                        f"{good}\"; }},\n    {{ selector = \"loose\"; key_file = \"{loose}\"; }}\n"
                        "  );\n};\n")
    p = env.matrixd("-n")
    assert p.returncode == 1
    want = f"{env.conf}:{line_of(env.conf, 'loose.pem')}: "
    assert want in p.stderr and "readable by others (mode 644)" in p.stderr, p.stderr
    assert f"chmod 600 {loose}" in p.stderr
    # the daemon does not start with it either
    assert env.matrixd("--once").returncode == 1
    # a 1024-bit RSA key (made with openssl: dkim-keygen refuses to)
    weak = env.tmp / "weak.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(weak)], check=True,
                   capture_output=True)
    weak.chmod(0o600)
    env.conf.write_text(base + f'dkim = {{\n  keys = ( {{ selector = "weak"; key_file = "{weak}"; }} );\n}};\n')
    p = env.matrixd("-n")
    assert p.returncode == 1
    assert f"{env.conf}:{line_of(env.conf, 'weak.pem')}: " in p.stderr, p.stderr
    assert "1024-bit RSA key" in p.stderr
    # not a key at all; missing; a key of another type
    junk = env.tmp / "junk.pem"
    junk.write_text("hello\n")
    junk.chmod(0o600)
    ec = env.tmp / "ec.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(ec)], check=True, capture_output=True)
    ec.chmod(0o600)
    for f, why in ((junk, "is not a PEM private key"), (env.tmp / "none.pem", "No such file"),
                   (ec, "is a EC")):
        env.conf.write_text(base + f'dkim = {{ keys = ( {{ selector = "x"; key_file = "{f}"; }} ); }};\n')
        p = env.matrixd("-n")
        assert p.returncode == 1 and why in p.stderr, (why, p.stderr)
        assert f"{env.conf}:" in p.stderr
    # an empty key list, an unknown key in a key's group
    env.conf.write_text(base + "dkim = { keys = ( ); };\n")
    p = env.matrixd("-n")
    assert p.returncode == 1 and "dkim needs at least one key" in p.stderr, p.stderr
    env.conf.write_text(base + f'dkim = {{ keys = ( {{ selector = "x"; file = "{good}"; }} ); }};\n')
    p = env.matrixd("-n")
    assert p.returncode == 1 and "unknown key 'dkim.keys.file'" in p.stderr, p.stderr


def test_keygen_refuses_to_overwrite(tmp_path):
    env = Env(tmp_path)
    out = env.tmp / "k.pem"
    out.write_text("precious\n")
    p = env.ctl("dkim-keygen", "--selector", "s", "--out", out)
    assert p.returncode == 1 and "never overwrites" in p.stderr
    assert out.read_text() == "precious\n"
    link = env.tmp / "link.pem"
    link.symlink_to(env.tmp / "elsewhere.pem")
    assert env.ctl("dkim-keygen", "--selector", "s", "--out", link).returncode == 1
    assert not (env.tmp / "elsewhere.pem").exists()
    assert env.ctl("dkim-keygen", "--selector", "s", "--bits", "1024",
                   "--out", env.tmp / "w.pem").returncode != 0
    assert not (env.tmp / "w.pem").exists()
    assert env.ctl("dkim-keygen", "--selector", "s", "--type", "dsa",
                   "--out", env.tmp / "d.pem").returncode == 2


def test_keygen_makes_only_keys_matrixd_takes(tmp_path):
    """A selector matrixd refuses in dkim.keys (empty, a leading '-', an
    empty label) is refused by dkim-keygen too, before a key is written:
    it once wrote the key and printed '._domainkey.example.org.'."""
    env = Env(tmp_path)
    for sel in ("", "-rsa", "rsa-", "a..b", ".a", "a" * 64):
        out = env.tmp / "k.pem"
        p = env.ctl("dkim-keygen", "--selector", sel, "--type", "ed25519", "--out", out)
        assert p.returncode != 0 and "--selector" in p.stderr, (sel, p.stdout, p.stderr)
        assert p.stdout == "" and not out.exists(), sel
    out, rec = keygen(env, "mail.rsa-2026", "--type", "ed25519")
    assert rec.startswith("mail.rsa-2026._domainkey.example.org. IN TXT ")
    add_dkim(env, [("mail.rsa-2026", out)])
    assert env.matrixd("-n").returncode == 0


def test_idn_from_domain_signs_sends_and_keygen_names_it(tmp_path, server):
    """site.from with an internationalized domain: d= is its A-label, so the
    record dkim-keygen prints must sit there (a U-label name in a zone file
    is another name: every signature would fail). The default return path,
    the List-Unsubscribe mailto and EHLO take the A-label too (they once
    carried the U-label into headers, and no message could be built); a
    return path in the From domain is aligned, however it is spelt."""
    env = smtp_env(tmp_path, server, site_from='"矩阵 <news@例子.测试>"',
                   smtp_return_path=None)  # the default: bounces+{token}@ site.from's domain
    out, rec = keygen(env, "ed1", "--type", "ed25519")
    name, txt = record(rec)
    assert name == "ed1._domainkey.xn--fsqu00a.xn--0zwm56d.", rec
    add_dkim(env, [("ed1", out)])
    p = env.matrixd("-n")
    assert p.returncode == 0, p.stderr
    assert "d=xn--fsqu00a.xn--0zwm56d" in p.stdout
    assert "return_path" not in p.stderr, p.stderr
    subscribe(env, "ann@example.org")
    drop_issue(env)
    p = once(env)
    assert p.returncode == 0, p.stderr
    assert server.received
    for r in server.received:
        assert verify_all(r.data, {name: txt.encode()}) == [True]
        # no 8-bit byte in a header: the IDN in From, the mailto and the
        # envelope as A-labels (they once stopped every message)
        assert r.mail_from.endswith("@xn--fsqu00a.xn--0zwm56d"), r.mail_from
        m = r.message()
        assert "<news@xn--fsqu00a.xn--0zwm56d>" in m["From"]
        assert "@xn--fsqu00a.xn--0zwm56d>" in m["List-Unsubscribe"], m["List-Unsubscribe"]
    # given in U-labels, the return path is the same domain
    env.write_conf(**smtp_conf(env, server), site_from='"矩阵 <news@例子.测试>"',
                   smtp_return_path='"bounces+{token}@例子.测试"')
    add_dkim(env, [("ed1", out)])
    p = env.matrixd("-n")
    assert p.returncode == 0 and "return_path" not in p.stderr, p.stderr
    # a local part that no header can carry is refused at the check
    env.write_conf(**smtp_conf(env, server), smtp_return_path='"退信+{token}@例子.测试"')
    p = env.matrixd("-n")
    assert p.returncode == 1 and "smtp.return_path must be an address with an ASCII" in p.stderr


def test_sigterm_during_a_signed_send_loses_nothing(tmp_path, server):
    """A sender signs its next message while the relay answers the one
    before (daemon/sender.c, sign_ahead): at SIGTERM that message, signed
    and not sent, goes back to the queue like any other not begun. The
    stop is prompt, records every outcome, and the restart sends the rest:
    every message once, every one verified."""
    from test_daemon import sigterm_mid_send
    env = smtp_env(tmp_path, server, smtp_connections=4)
    rsa, rsa_rec = keygen(env, "rsa2026", "--type", "rsa", "--bits", "2048")
    name, txt = record(rsa_rec)
    dns = {name: txt.encode()}
    add_dkim(env, [("rsa2026", rsa)])
    stopped_at, _ = sigterm_mid_send(env, server, 40, 100)
    for r in server.received[stopped_at - 5:stopped_at + 5]:  # around the stop
        assert verify_all(r.data, dns) == [True], r.rcpts
