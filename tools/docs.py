#!/usr/bin/env python3
"""HTML pages from the notebooks, with their outputs, without Quarto (nbdev_docs needs Quarto; `make docs` uses
nbdev_docs when `quarto` is on PATH and this script otherwise).

    python tools/docs.py                  # execute every notebook (as nbdev_test does), write _docs/
    python tools/docs.py --no-execute     # pages from the outputs stored in the notebooks (fast; ours store none)
    python tools/docs.py --out /tmp/site nbs/index.ipynb nbs/10_tutorial_switch_codec.ipynb

Each `nbs/**/*.ipynb` (index first, then in file-name order; names starting with `_` or `.` skipped, as nbdev
does) is executed in a fresh kernel with its folder as working directory. Cells flagged with a settings.ini
`tst_flags` flag (`#| slow`, `#| gpu`) or `#| eval: false` are not run, as in `nbdev_test`; the page shows
their code with a note. Widget state is stored, so the explorer renders in the page (its JavaScript comes
from a CDN when the page is viewed). Then nbconvert's `lab` template writes one page per notebook with:
`#| hide` cells dropped, leading `#|` directive lines stripped from the code shown, `#| hide_input`/`echo: false`
and `#| hide_output`/`output: false` honoured, links `XX_name.ipynb` -> `XX_name.html`, a sidebar listing the
notebooks by title, and `nbs/images/` copied to `<out>/images/`.
"""
import argparse, configparser, copy, html, os, re, shutil, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat

root = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r"^\s*#\s*\|\s*(.*?)\s*$")


def settings():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(root / "settings.ini", encoding="utf-8")
    return cfg["DEFAULT"]


def notebooks(nbs_path):
    "Notebooks under `nbs_path` as nbdev sees them: index first, then sorted paths; `_`/`.` names skipped."
    nbs = [p for p in sorted(nbs_path.rglob("*.ipynb"))
           if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs_path).parts)]
    return sorted(nbs, key=lambda p: (p.relative_to(nbs_path) != Path("index.ipynb"), str(p.relative_to(nbs_path))))


def _src(cell): return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def split_directives(src):
    "(directives, body): the leading `#|` lines of a cell (nbdev's rule: only at the top) and the rest."
    lines, dirs = src.splitlines(), []
    while lines and (m := DIRECTIVE.match(lines[0])):
        dirs.append(m.group(1)); lines.pop(0)
    return dirs, "\n".join(lines)


def _flags(dirs):
    "Normalised directives: 'hide', 'eval: false', 'slow', ... (nbdev accepts `#|hide`, `#| hide`, `#| eval:false`)."
    return {re.sub(r"\s*:\s*", ": ", d.strip()).lower() for d in dirs if d.strip()}


def skip_reason(cell, tst_flags):
    "Why the cell is not executed (as `nbdev_test` without --flags), or None."
    if cell.cell_type != "code": return None
    f = _flags(split_directives(_src(cell))[0])
    for flag in tst_flags:
        if flag in f: return f"#| {flag}"
    if "eval: false" in f: return "#| eval: false"
    return None


def title_of(nb, path):
    "The page title: the notebook's first `# heading` (as nbdev), else the file name."
    for c in nb.cells:
        if c.cell_type != "markdown": continue
        m = re.search(r"^#\s+(.+?)\s*$", split_directives(_src(c))[1], re.M)
        if m: return m.group(1)
    return path.stem


def execute(path, tst_flags, timeout):
    "Execute a copy of the notebook in its folder; returns the notebook with outputs (skipped cells untouched)."
    from nbclient import NotebookClient

    class Client(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, *args, **kw):
            if skip_reason(cell, tst_flags): return cell
            return await super().async_execute_cell(cell, cell_index, *args, **kw)

    # the kernel draws inline figures only without MPLBACKEND (the Makefile exports Agg for headless runs); we run
    # in a worker process, so this changes nobody else's environment
    os.environ.pop("MPLBACKEND", None)
    nb = nbformat.read(path, as_version=4)
    Client(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
           store_widget_state=True).execute()
    return nb


def _ipynb_link(m):
    "`XX_name.ipynb` / `XX_name.ipynb#anchor` -> `.html`, only for relative links."
    target = m.group(2)
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"): return m.group(0)
    return m.group(1) + re.sub(r"\.ipynb(?=$|#|\?)", ".html", target) + m.group(3)


def rewrite_links(text):
    "Relative links to notebooks in markdown (`](x.ipynb)`) and HTML (`href=\"x.ipynb\"`) point at their pages."
    text = re.sub(r"(\]\()([^)\s]+)(\s*(?:\"[^\"]*\")?\))", _ipynb_link, text)
    return re.sub(r"""(href=["'])([^"']+)(["'])""", _ipynb_link, text)


def for_display(nb, tst_flags, executed):
    "A copy of `nb` as a page shows it: hidden cells gone, directives stripped, links rewritten, skipped cells noted."
    nb = copy.deepcopy(nb); cells = []
    for c in nb.cells:
        dirs, body = split_directives(_src(c)); f = _flags(dirs)
        if "hide" in f or "exporti" in f or "include: false" in f: continue
        if c.cell_type == "markdown":
            c.source = rewrite_links(body)
            if c.source.strip(): cells.append(c)
            continue
        if c.cell_type != "code": cells.append(c); continue
        c.source = body
        if "hide_input" in f or "echo: false" in f: c.metadata.setdefault("jupyter", {})["source_hidden"] = True; c.source = ""
        if "hide_output" in f or "output: false" in f: c.outputs = []
        for o in c.get("outputs", []):
            for mime in ("text/html", "text/markdown"):
                if mime in o.get("data", {}):
                    v = o["data"][mime]; o["data"][mime] = rewrite_links(v if isinstance(v, str) else "".join(v))
        if not c.source.strip() and not c.get("outputs"): continue
        cells.append(c)
        if any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.get("outputs", [])):
            cells.append(nbformat.v4.new_markdown_cell(
                "<p class=\"docs-note\">An interactive widget: this page shows it as it was when the page was built, "
                "if your browser can load the ipywidgets JavaScript (from a CDN); to use it, run the notebook in JupyterLab.</p>"))
        why = skip_reason(nbformat.v4.new_code_cell(_src_with(dirs)), tst_flags) if executed else None
        if why:
            cells.append(nbformat.v4.new_markdown_cell(
                f"<p class=\"docs-skipped\">Not run when these pages were built (<code>{html.escape(why)}</code>): "
                "run it yourself in JupyterLab.</p>"))
    nb.cells = cells
    return nb


def _src_with(dirs): return "\n".join(f"#| {d}" for d in dirs)


CSS = """
<style>
  body.jp-Notebook { margin: 0; }
  nav.docs-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto; padding: 1rem;
    box-sizing: border-box; border-right: 1px solid #ddd; background: #fafafa; font: 14px/1.4 system-ui, sans-serif; }
  nav.docs-nav .docs-project { font-weight: 600; font-size: 16px; display: block; margin-bottom: .8rem; }
  nav.docs-nav ol { list-style: none; padding: 0; margin: 0; }
  nav.docs-nav li a { display: block; padding: .25rem .4rem; color: #333; text-decoration: none; border-radius: 4px; }
  nav.docs-nav li a:hover { background: #eee; }
  nav.docs-nav li a[aria-current="page"] { background: #e3ecfa; font-weight: 600; }
  body.jp-Notebook > main { margin-left: 15rem; }
  .docs-skipped, .docs-note { color: #8a5a00; font-size: 90%; font-style: italic; }
  .jp-RenderedMarkdown pre { margin: 0 0 1em; padding: .4em .6em; background: #f5f5f5; }
  @media (max-width: 800px) { nav.docs-nav { position: static; width: auto; border-right: 0; }
    body.jp-Notebook > main { margin-left: 0; } }
</style>
"""


def nav_html(pages, current, out):
    "The sidebar: every page by title, links relative to `current`'s folder."
    here = (out / current).parent
    items = []
    for rel, title in pages:
        href = os.path.relpath(out / rel, here).replace(os.sep, "/")
        cur = ' aria-current="page"' if rel == current else ""
        items.append(f'<li><a href="{html.escape(href)}"{cur}>{html.escape(title)}</a></li>')
    home = os.path.relpath(out / "index.html", here).replace(os.sep, "/")
    return (f'<nav class="docs-nav"><a class="docs-project" href="{home}">{html.escape(settings().get("title", "docs"))}</a>'
            f'<ol>{"".join(items)}</ol></nav>')


def render(nb, title, nav):
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = re.sub(r"<title>.*?</title>", f"<title>{html.escape(title)}</title>", body, count=1, flags=re.S)
    body = body.replace("</head>", CSS + "</head>", 1)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + nav, body, count=1)


def _execute_job(args):
    path, tst_flags, timeout = args
    t = time.time()
    try: return path, execute(Path(path), tst_flags, timeout), time.time() - t, None
    except Exception as e: return path, None, time.time() - t, f"{type(e).__name__}: {e}"


def build(out, paths=None, execute_nbs=True, jobs=1, timeout=900, quiet=False, nbs_path=None):
    "Write the pages of `paths` (default: every notebook under `nbs_path`) into `out`; returns [(relative html path, title)]."
    cfg = settings(); nbs_path = Path(nbs_path or root / cfg.get("nbs_path", "nbs")).resolve(); out = Path(out)
    tst_flags = cfg.get("tst_flags", "").split()
    paths = [Path(p).resolve() for p in paths] if paths else notebooks(nbs_path)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    nbs = {p: nbformat.read(p, as_version=4) for p in paths}
    if execute_nbs:
        failed = []
        with ProcessPoolExecutor(max(1, jobs)) as ex:
            for p, nb, dt, err in ex.map(_execute_job, [(str(p), tst_flags, timeout) for p in paths]):
                log(f"{'FAILED' if err else 'executed'} {os.path.relpath(p, root)} in {dt:.0f}s" + (f": {err[:2000]}" if err else ""))
                if err: failed.append(p)
                else: nbs[Path(p)] = nb
        if failed: sys.exit(f"docs: {len(failed)} notebook(s) failed to execute: {', '.join(failed)}")
    pages = [(p.relative_to(nbs_path).with_suffix(".html"), title_of(nb, p)) for p, nb in nbs.items()]
    out.mkdir(parents=True, exist_ok=True)
    for (rel, title), (p, nb) in zip(pages, nbs.items()):
        dst = out / rel; dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(render(for_display(nb, tst_flags, execute_nbs), title, nav_html(pages, rel, out)), encoding="utf-8")
        log(f"wrote {dst}")
    for d in sorted(nbs_path.rglob("images")):
        if d.is_dir() and not any(part.startswith(("_", ".")) for part in d.relative_to(nbs_path).parts):
            shutil.copytree(d, out / d.relative_to(nbs_path), dirs_exist_ok=True)
    (out / ".nojekyll").touch()
    return pages


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebooks to render (default: all under nbs_path)")
    ap.add_argument("--out", default=None, help="output folder (default: settings.ini doc_path, _docs)")
    ap.add_argument("--no-execute", action="store_true", help="use the outputs stored in the notebooks instead of running them")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks executed in parallel (default 1)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell before a notebook fails (default 900)")
    a = ap.parse_args(argv)
    t = time.time()
    out = Path(a.out or root / settings().get("doc_path", "_docs"))
    pages = build(out, a.notebooks or None, execute_nbs=not a.no_execute, jobs=a.jobs, timeout=a.timeout)
    print(f"{len(pages)} pages in {out}/ ({time.time() - t:.0f}s); open {out / 'index.html'}")


if __name__ == "__main__":
    main()
