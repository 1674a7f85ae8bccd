"""The raw-export rules and missing images seen from outside: `matrixctl
render` of the exports written for the tests (tests/data/issues/export-6*.txt,
tests/data/README.md) and of a folder issue that lacks an image, as a
reader gets them in the pages, the mails and the feeds. Which line becomes a
caption, a heading, a paragraph or a list item is tests/unit/test_typeset.c's
to check; here: what reaches the reader is whole and never broken."""
import re

import pytest

from conftest import DATA, Env, MATRIXCTL
from test_render import audit, body_of, columns, parse_eml

EXPORTS = [DATA / "issues" / "export-65.txt", DATA / "issues" / "export-66.txt"]


def render(env, issue, out):
    p = env.ctl("render", issue, "--out", out)
    assert p.returncode == 0, p.stderr
    return p


def outputs(out):
    """(name, html, text) of every page, mail part and feed written."""
    found = []
    for page in sorted((out / "public").rglob("*.html")):
        found.append((page.name, page.read_text(), ""))
    for feed in ("feed.xml", "atom.xml"):
        found.append((feed, (out / "public" / feed).read_text(), ""))
    for f in sorted((out / "mail").glob("*.eml")) + [out / "digest.eml"]:
        _, m = parse_eml(f)
        found.append((f.name, body_of(m, "text/html"), body_of(m, "text/plain")))
    return found


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exports")
    env = Env(tmp)
    done = {}
    for issue in EXPORTS:
        out = tmp / issue.stem
        done[issue.stem] = (render(env, issue, out), out)
    return done


@pytest.mark.parametrize("name", [e.stem for e in EXPORTS])
def test_export_reads_whole(exports, name):
    """Every text line fits a terminal (URLs aside), nothing asks to scan a
    QR code that is not there, no link goes nowhere, no image is broken."""
    _, out = exports[name]
    longest = 0
    for fname, html, text in outputs(out):
        assert audit(html).bad == [], fname
        assert "二维码" not in html and "二维码" not in text, fname
        assert 'href="#"' not in html, fname
        assert "<img" not in html, fname  # a raw export holds no image
        for line in text.splitlines():
            if "://" not in line:
                longest = max(longest, columns(line))
                assert columns(line) <= 78, (fname, line)
    print(name, "longest text line without a URL:", longest, "columns")


def test_numbered_lines_are_a_list_everywhere(exports):
    """Numbered lines printed one after the other are one list keeping the
    printed numbers: the page's and the mail's list shows no second number,
    the text part hangs the wrapped lines under the item's text."""
    _, out = exports["export-65"]
    html = next(t for t in (p.read_text() for p in (out / "public" / "issues" / "65").glob(
        "*.html")) if "（一）建设" in t)
    assert re.search(r'<ul class="mx-items">\s*<li class="mx-item">\s*（一）建设', html)
    assert ".mx-items { list-style: none;" in html
    mail = next((out / "mail").glob("01-*.eml"))
    _, m = parse_eml(mail)
    h, t = body_of(m, "text/html"), body_of(m, "text/plain")
    assert re.search(r'<ul class="mx-items" style="[^"]*list-style:none', h)
    lines = t.splitlines()
    first = next(i for i, l in enumerate(lines) if l.startswith("（一）建设"))
    # the item wraps: its next line hangs under the text, not the number
    assert lines[first + 1].startswith("      ") and not lines[first + 1].startswith("       ")


def test_export_naming_an_image(exports):
    """A raw export that names an image (a single file holds none): no image
    in any output, its figure caption kept and marked, and the warning."""
    p, out = exports["export-66"]
    assert "export-66.txt:86: the image 'fig-3.png' cannot be published" in p.stderr
    for fname, html, text in outputs(out):
        assert "fig-3.png" not in html and "fig-3.png" not in text, fname
    pages = "".join(f.read_text() for f in (out / "public" / "issues" / "66").glob("*.html"))
    assert re.search(r'<p class="mx-caption">\s*图 3：三步筛选流程示意（图略）\s*</p>', pages)


def test_missing_image_is_left_out(env, tmp_path):
    """A folder issue whose image file is absent: no <img> pointing nowhere in
    the pages, the mails or the feeds; a figure caption written as the
    image's text stays as a caption, marked; an inline one just goes; the
    images that are there stay; render and inspect warn with file:line."""
    d = env.tmp / "issues" / "matrix-73"
    (d / "img").mkdir(parents=True)
    (d / "img" / "cover.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (d / "issue.md").write_text(
        "---\ntitle: Matrix NO.73\nnumber: 73\ndate: 2023-01-15\n---\n\n"
        "# 第一篇文章\n\n第一段正文。\n\n![封面](img/cover.png)\n\n"
        "# 第二篇文章\n\n第二段正文，见下图。\n\n![图 2：系统结构](img/b.png)\n\n"
        "行内的图 ![小图](img/c.png) 不见了，文字还在。\n")
    out = tmp_path / "out"
    p = render(env, d, out)
    for img, line in (("img/b.png", 17), ("img/c.png", 19)):
        assert f"issue.md:{line}: the image '{img}' is not in the issue folder" in p.stderr
    q = env.ctl("inspect", d)
    assert q.returncode == 0 and "issue.md:17: the image 'img/b.png'" in q.stderr
    cover = "https://news.example.org/matrix/issues/73/img/cover.png"
    seen_cover = 0
    for fname, html, text in outputs(out):
        srcs = re.findall(r'<img[^>]*src="([^"]*)"', html.replace("&quot;", '"'))
        srcs += re.findall(r'&lt;img[^&]*src=&quot;([^&]*)&quot;', html)
        assert all(s == cover for s in srcs), (fname, srcs)
        seen_cover += len(srcs)
        for gone in ("img/b.png", "img/c.png", "小图"):
            assert gone not in html and gone not in text, (fname, gone)
    assert seen_cover > 0
    # the article's page: the issue's index quotes its first line too, and
    # which of the two a directory listing gives first depends on the file
    # system (tmpfs in make fresh-check)
    page = next(f for f in (out / "public" / "issues" / "73").glob("*.html")
                if f.name != "index.html" and "第二段正文" in f.read_text()).read_text()
    assert re.search(r'<p class="mx-caption">\s*图 2：系统结构（图略）\s*</p>', page)
    assert "<p>行内的图 不见了，文字还在。</p>" in page
    assert (out / "public" / "issues" / "73" / "img" / "cover.png").is_file()
    assert not (out / "public" / "issues" / "73" / "img" / "b.png").exists()
    mail = next((out / "mail").glob("02-*.eml"))
    _, m = parse_eml(mail)
    assert "图 2：系统结构（图略）" in body_of(m, "text/plain")
