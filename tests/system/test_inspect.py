"""matrixctl inspect on the seed issue and on bad input, through the real
binary: the JSON of docs/matrixctl.8, the readable outline, and errors that name the
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


def test_warnings_name_file_and_line(tmp_path):
    """inspect tells the editor every guess it made, FILE:LINE first, on
    stderr (stdout, with --json too, stays the outline or the object)."""
    export = DATA / "issues" / "export-62.txt"
    for args in (("inspect", export), ("--json", "inspect", export)):
        p = ctl_noconf(*args)
        assert p.returncode == 0, p.stderr
        lines = p.stderr.splitlines()
        assert any(l.startswith(f"{export}:40: taken for the caption") for l in lines)
        assert any(l.startswith(f"{export}:34: joined with line 36") for l in lines)
        assert any(l.startswith(f"{export}:64: the text refers to 图 5") for l in lines)
        assert any(l.startswith(f"{export}:26: the figure") for l in lines)
        assert any(l.startswith(f"{export}:5: the period") for l in lines)
    json.loads(ctl_noconf("--json", "inspect", export).stdout)
    # an image the issue does not hold
    folder = tmp_path / "matrix-7"
    folder.mkdir()
    (folder / "issue.md").write_text("---\nnumber: 7\n---\n# A\n\nText.\n\n![cover](cover.png)\n")
    p = ctl_noconf("inspect", folder)
    assert p.returncode == 0
    assert f"{folder}/issue.md:8: the image 'cover.png' is not in the issue folder" in p.stderr
    (folder / "cover.png").write_bytes(b"\x89PNG\r\n")
    assert "cover.png" not in ctl_noconf("inspect", folder).stderr
    # the example issue is dated: no warning about its period
    assert "the period" not in ctl_noconf("inspect", SEED).stderr
