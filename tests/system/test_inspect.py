"""matrixctl inspect on the seed issue and on bad input, through the real
binary: the JSON of SPEC.md, the readable outline, and errors that name the
file and line with nothing on stdout."""
import json
import subprocess
import time

import pytest

from conftest import DATA, MATRIXCTL, SEED, ctl_noconf


def test_json_matches_spec_shape():
    p = ctl_noconf("--json", "inspect", SEED)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert list(d) == ["title", "number", "period", "language", "status", "articles",
                       "colophon"]
    assert (d["title"], d["number"], d["period"]) == ("Matrix NO.60", 60, "2022年1 - 3月")
    assert d["language"] == "zh-CN" and d["status"] == "publish"
    assert len(d["articles"]) == 15
    for i, a in enumerate(d["articles"], 1):
        assert list(a) == ["index", "section", "title", "slug", "summary", "markdown",
                           "text", "html"]
        assert a["index"] == i
        assert len(a["summary"]) <= 200
    sections = [a["section"] for a in d["articles"]]
    assert sections == ["焦点"] * 3 + ["前沿求索"] * 4 + ["科研第一线"] * 2 + \
        ["文化故事"] * 3 + ["媒体报道"] * 3
    assert d["articles"][3]["title"] == \
        "AI 挺进生命科学领域，分子动力学模拟加速新冠病毒致病机理研究进程"
    assert d["colophon"].startswith("周礼栋")
    assert "关于微软亚洲研究院" in d["colophon"]


def test_outline_is_readable():
    p = ctl_noconf("inspect", SEED)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "Matrix NO.60" in out and "2022年1 - 3月" in out
    assert "15 articles" in out and "table of contents" in out
    for s in ("[焦点]", "[前沿求索]", "[科研第一线]", "[文化故事]", "[媒体报道]"):
        assert s in out
    assert "Swin Transformer 迎来 30 亿参数的 v2.0，我们应该拥抱视觉大模型吗？" in out


@pytest.mark.parametrize("name,line,what", [
    ("invalid-utf8.txt", 5, "invalid UTF-8"),
    ("nul.txt", 5, "NUL byte"),
    ("empty.txt", 1, "empty"),
    ("unclosed-front-matter.md", 1, "never closed"),
    ("toc-missing.txt", 10, "这篇文章在正文里找不到"),
])
def test_bad_input(name, line, what):
    path = DATA / "issues" / "bad" / name
    for args in (("inspect", path), ("--json", "inspect", path)):
        p = ctl_noconf(*args)
        assert p.returncode == 1
        assert p.stdout == ""
        lines = p.stderr.splitlines()
        assert len(lines) == 1, p.stderr
        assert lines[0].startswith(f"matrixctl: {path}:{line}: "), lines[0]
        assert what in lines[0]


def test_over_max_issue_bytes(env):
    env.write_conf(max_issue_bytes=4096)
    p = env.ctl("inspect", SEED)
    assert p.returncode == 1 and p.stdout == ""
    assert f"{SEED}:1: " in p.stderr and "max_issue_bytes" in p.stderr


def test_usage_errors():
    assert ctl_noconf("inspect").returncode == 2
    assert ctl_noconf("inspect", "a", "b").returncode == 2
    p = ctl_noconf("inspect", "/nonexistent/issue.md")
    assert p.returncode == 1 and "No such file" in p.stderr


def test_inspect_is_fast():
    """Not a timing assertion (those flake): prints the figure for the notes,
    and only fails if something is pathologically slow."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([str(MATRIXCTL), "inspect", str(SEED)], capture_output=True, check=True)
        runs.append(time.perf_counter() - t)
    print(f"inspect seed: best {min(runs) * 1000:.1f} ms")
    assert min(runs) < 2.0
