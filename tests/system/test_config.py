"""matrixd -n: configuration checking from the command line."""
import subprocess

from conftest import MATRIXCTL, MATRIXD, ROOT


def run(*args):
    return subprocess.run([str(MATRIXD), *map(str, args)], capture_output=True, text=True,
                          timeout=30)


def test_example_config_is_valid(tmp_path):
    # the documented example, with its directories where this test can have them
    text = (ROOT / "conf" / "matrixd.conf.example").read_text()
    (tmp_path / "issues").mkdir()
    text = text.replace('"/var/lib/matrixd/issues"', f'"{tmp_path}/issues"')
    conf = tmp_path / "matrixd.conf"
    conf.write_text(text)
    p = run("-n", "-c", conf)
    assert p.returncode == 0, p.stderr


def test_demo_config_is_valid_once_its_keys_exist(tmp_path):
    # make run's configuration, in a copy of the tree's layout: it signs with
    # two keys examples/run.sh makes on the first run, as done here
    ex = tmp_path / "examples"
    (ex / "issues").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "run" / "dkim").mkdir(parents=True)
    conf = ex / "matrixd.conf"
    conf.write_text((ROOT / "examples" / "matrixd.conf").read_text())
    p = run("-n", "-c", conf)
    assert p.returncode == 1 and "demo-rsa.pem" in p.stderr
    for kind, sel in (("rsa", "demo-rsa"), ("ed25519", "demo-ed")):
        k = subprocess.run([str(MATRIXCTL), "-c", str(conf), "dkim-keygen", "--type", kind,
                            "--selector", sel, "--out", str(tmp_path / "run" / "dkim" / f"{sel}.pem")],
                           capture_output=True, text=True, timeout=30)
        assert k.returncode == 0, k.stderr
        assert k.stdout.startswith(f"{sel}._domainkey.example.org. IN TXT")
    p = run("-n", "-c", conf)
    assert p.returncode == 0, p.stderr


def test_missing_issue_dir_and_password_file(env):
    env.write_conf(issue_dir=f'"{env.tmp}/nowhere"')
    p = run("-n", "-c", env.conf)
    assert p.returncode == 1 and "issue_dir" in p.stderr and "nowhere" in p.stderr
    env.write_conf(smtp_username='"u"', smtp_password_file=f'"{env.tmp}/no-such-file"')
    p = run("-n", "-c", env.conf)
    assert p.returncode == 1 and "no-such-file" in p.stderr


def test_template_warnings(env):
    t = env.tmp / "t"
    t.mkdir()
    (t / "mail-artcle.html.mustache").write_text("{{x}}")
    env.write_conf(template_dir=f'"{t}"')
    p = run("-n", "-c", env.conf)
    assert p.returncode == 0
    assert "mail-artcle.html.mustache overrides no built-in template" in p.stderr


def test_bad_config_names_file_and_line(env):
    text = env.conf.read_text() + "smtp_typo = 4;\n"
    env.conf.write_text(text)
    line = text.count("\n")
    p = run("-n", "-c", env.conf)
    assert p.returncode == 1
    assert f"{env.conf}:{line}: unknown key 'smtp_typo'" in p.stderr


def test_wrong_type(env):
    env.write_conf(smtp_connections='"four"')
    p = run("-n", "-c", env.conf)
    assert p.returncode == 1
    assert "smtp.connections must be an integer" in p.stderr
    assert str(env.conf) + ":" in p.stderr


def test_missing_file(tmp_path):
    """No file where the configuration is looked for: the message says
    where one comes from (-c FILE, $MATRIXD_CONF, the example), for matrixd
    -n, matrixd and matrixctl, whichever way the path was given."""
    import os
    missing = tmp_path / "matrixd.conf"
    env = {k: v for k, v in os.environ.items() if k != "MATRIXD_CONF"}
    for argv, extra in (([MATRIXD, "-n", "-c", missing], {}),
                        ([MATRIXD, "-n"], {"MATRIXD_CONF": str(missing)}),
                        ([MATRIXD, "-c", missing], {}),
                        ([MATRIXCTL, "-c", missing, "status"], {}),
                        ([MATRIXCTL, "status"], {"MATRIXD_CONF": str(missing)})):
        p = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=30,
                           env={**env, **extra})
        assert p.returncode != 0, argv
        assert f"{missing}: No such file or directory" in p.stderr, (argv, p.stderr)
        assert "pass -c FILE or set $MATRIXD_CONF" in p.stderr, (argv, p.stderr)
        assert "conf/matrixd.conf.example" in p.stderr, (argv, p.stderr)
        assert "/doc/matrixd/matrixd.conf.example) documents every key" in p.stderr, argv
        assert p.stderr.count("matrixd.conf.example") == 2, p.stderr


def test_usage():
    assert run("--bogus").returncode == 2
