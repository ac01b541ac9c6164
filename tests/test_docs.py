"""`make docs` without Quarto: tools/docs.py turns the notebooks into HTML pages.

The pages of the current notebooks are built once (from their stored outputs: executing every notebook is what
`make docs` does and takes as long as nbdev_test) and checked: one page per notebook, titled like the notebook,
no `#|` directive left in the code shown, every relative link and image resolving. `index.ipynb` is also built
*executed*, to check that outputs make it into a page. A small synthetic notebook folder checks the rewrites
(hidden cells, directives, links between notebooks, images) on known input.
"""
import importlib.util, re, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("codecswap_docs", ROOT / "tools" / "docs.py")
docs = importlib.util.module_from_spec(_spec)
sys.modules["codecswap_docs"] = docs   # its worker processes unpickle `docs._execute_job` by module name
_spec.loader.exec_module(docs)


class Page(HTMLParser):
    "Title, ids, links and the text of code inputs (`.jp-InputArea`) of one page."
    def __init__(self, text):
        super().__init__(); self.title, self.ids, self.links, self.code = "", set(), [], []
        self._stack, self._in_title, self._buf = [], False, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"])
        for k in ("href", "src"):
            if a.get(k) and tag in ("a", "img", "link", "script", "audio", "source"): self.links.append(a[k])
        if tag == "title": self._in_title = True
        if tag in ("br", "img", "meta", "link", "input", "hr", "source"): return   # void elements
        starts = self._buf is None and "jp-InputArea" in (a.get("class") or "").split()
        self._stack.append(starts)
        if starts: self._buf = []

    def handle_endtag(self, tag):
        if tag == "title": self._in_title = False
        if tag in ("br", "img", "meta", "link", "input", "hr", "source") or not self._stack: return
        if self._stack.pop() and self._buf is not None: self.code.append("".join(self._buf)); self._buf = None

    def handle_data(self, data):
        if self._in_title: self.title += data
        if self._buf is not None: self._buf.append(data)


def _local(link):
    "The path part of a relative link, or None for external, data: and in-page links."
    u = urlsplit(link)
    if u.scheme or u.netloc or link.startswith("#") or not u.path: return None
    return unquote(u.path), u.fragment


def check_pages(out, pages):
    "Every page exists, has its title, shows no directive, and its relative links resolve (fragments included)."
    parsed = {rel: Page((out / rel).read_text(encoding="utf-8")) for rel, _ in pages}
    for rel, title in pages:
        p = parsed[rel]
        assert p.title.strip() == title, f"{rel}: <title> {p.title!r}, expected {title!r}"
        assert p.code, f"{rel}: no code input found (did nbconvert's lab template change?)"
        left = [l for c in p.code for l in c.splitlines() if re.match(r"\s*#\s*\|", l)]
        assert not left, f"{rel}: nbdev directives left in the code shown: {left[:5]}"
        for link in p.links:
            if (loc := _local(link)) is None: continue
            path, frag = loc
            target = (out / rel).parent / path
            assert target.exists(), f"{rel}: broken link {link!r} ({target} does not exist)"
            if frag and target.suffix == ".html":
                tgt = parsed.get(target.resolve().relative_to(out.resolve())) or Page(target.read_text(encoding="utf-8"))
                assert frag in tgt.ids, f"{rel}: link {link!r} points at a missing anchor"
    return parsed


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    return out, docs.build(out, execute_nbs=False, quiet=True)


def test_every_notebook_has_a_page(site):
    out, pages = site
    nbs = docs.notebooks(ROOT / "nbs")
    assert [Path(rel) for rel, _ in pages] == [p.relative_to(ROOT / "nbs").with_suffix(".html") for p in nbs]
    assert pages[0][0] == Path("index.html"), "index first"
    for (rel, title), nb in zip(pages, nbs):
        assert title == docs.title_of(nbformat.read(nb, as_version=4), nb)
        assert not title.endswith(".ipynb")
    check_pages(out, pages)
    for img in (ROOT / "nbs" / "images").glob("*"):
        assert (out / "images" / img.name).read_bytes() == img.read_bytes()


def test_sidebar_lists_every_page_by_title(site):
    out, pages = site
    html = (out / pages[-1][0]).read_text(encoding="utf-8")
    nav = re.search(r'<nav class="docs-nav">(.*?)</nav>', html, re.S).group(1)
    for rel, title in pages:
        assert f'href="{rel.as_posix()}"' in nav and docs.html.escape(title) in nav, f"sidebar lacks {rel} / {title}"
    assert nav.count('aria-current="page"') == 1


def test_executed_page_has_outputs(tmp_path):
    "Executed like `make docs` does (here only the index, which is quick): its code cell's output is in the page."
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    hidden = [docs.split_directives(docs._src(c))[1] for c in nb.cells
              if c.cell_type == "code" and "hide" in docs._flags(docs.split_directives(docs._src(c))[0])]
    pages = docs.build(tmp_path, [ROOT / "nbs" / "index.ipynb"], execute_nbs=True, quiet=True)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "jp-OutputArea-output" in html, "no output in the executed page"
    for h in hidden:
        assert docs.html.escape(h.strip().splitlines()[0]) not in html, f"a #| hide cell is shown: {h[:80]!r}"
    check_pages(tmp_path, pages)


def _nb(*cells):
    nb = nbformat.v4.new_notebook(); nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(s[3:]) if s.startswith("md:") else nbformat.v4.new_code_cell(s) for s in cells]
    return nb


def test_rewrites_on_known_notebooks(tmp_path):
    nbs = tmp_path / "nbs"; (nbs / "images").mkdir(parents=True); (nbs / "images" / "fig.png").write_bytes(b"\x89PNG fake")
    nbformat.write(_nb("md:# Home\n\n> the index", "#| hide\nSECRET_HIDDEN = 1",
                       "md:See [the stage](01_stage.ipynb) and [its part](01_stage.ipynb#A-part), ![fig](images/fig.png), "
                       "[outside](https://example.org/x.ipynb)."), nbs / "index.ipynb")
    stage = _nb("md:# A stage", "#| default_exp stage", "#|export\ndef f(): return 1  # keep #| inside a line",
                "md:## A part", "#| slow\nrun_for_hours()", "#| hide_input\nINPUT_HIDDEN = 2",
                "md:<a href=\"index.ipynb\">home</a>")
    stage.cells[-2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="the output stays\n")]
    stage.cells[2].outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "m0", "version_major": 2, "version_minor": 0},
        "text/plain": "interactive(...)"})]
    nbformat.write(stage, nbs / "01_stage.ipynb")
    nbformat.write(_nb("md:# private"), nbs / "_private.ipynb")
    out = tmp_path / "site"
    pages = docs.build(out, execute_nbs=False, quiet=True, nbs_path=nbs)
    assert pages == [(Path("index.html"), "Home"), (Path("01_stage.html"), "A stage")]
    parsed = check_pages(out, pages)
    index, stage_html = (out / "index.html").read_text(), (out / "01_stage.html").read_text()
    assert 'href="01_stage.html"' in index and 'href="01_stage.html#A-part"' in index
    assert 'href="https://example.org/x.ipynb"' in index, "external links are left alone"
    assert "SECRET_HIDDEN" not in index and (out / "images" / "fig.png").exists()
    assert 'href="index.html"' in stage_html and "default_exp" not in stage_html
    assert "def" in "".join(parsed[Path("01_stage.html")].code) and "keep #| inside a line" in stage_html
    assert "INPUT_HIDDEN" not in stage_html and "the output stays" in stage_html
    assert "run_for_hours" in stage_html, "a #| slow cell is shown (not run) in the pages"
    assert not (out / "_private.html").exists()
    assert stage_html.count('class="docs-note"') == 1, "a widget output gets a note on where it works"
