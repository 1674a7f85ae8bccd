"""matrixd -n: configuration checking from the command line."""
import subprocess

from conftest import MATRIXD, ROOT


def run(*args):
    return subprocess.run([str(MATRIXD), *map(str, args)], capture_output=True, text=True,
                          timeout=30)


def test_example_config_is_valid():
    p = run("-n", "-c", ROOT / "conf" / "matrixd.conf.example")
    assert p.returncode == 0, p.stderr
    p = run("-n", "-c", ROOT / "examples" / "matrixd.conf")
    assert p.returncode == 0, p.stderr


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


def test_missing_file():
    p = run("-n", "-c", "/nonexistent/matrixd.conf")
    assert p.returncode == 1
    assert "/nonexistent/matrixd.conf" in p.stderr


def test_usage():
    assert run("--bogus").returncode == 2
