#!/usr/bin/env python3
"""Execute notebooks in place so that they keep the outputs of their fast cells (what a reader sees on GitHub and
in `make docs`). Cells flagged `#| slow` or `#| gpu` are not run and keep no output: their results live in result
files (results/), rendered into the notebooks by tools/results.py.

    python tools/execute_nbs.py [NOTEBOOK ...] [--jobs N]     # default: every notebook in nbs/

Then `nbdev_clean` (make check does it) strips the metadata and execution counts.
"""
import argparse, os, subprocess, sys, time
from pathlib import Path

root = Path(__file__).resolve().parents[1]
SKIP = {"slow", "gpu"}


def _skipped(cell) -> bool:
    "Cells nbdev_test would not run: markdown, flagged slow/gpu, `eval: false`, the final `nbdev_export()`."
    if cell.cell_type != "code": return True
    if "nbdev_export" + "(" in cell.source: return True
    dirs = [l[3:].strip() for l in cell.source.splitlines() if l.startswith("#|")]
    return any(d.split(":")[0].split()[0] in SKIP for d in dirs if d) or any(d.replace(" ", "") == "eval:false" for d in dirs)


def _small_png(b64, limit=120_000) -> str:
    "A figure's PNG (base64) in at most ~`limit` bytes: 256 colours, then smaller if need be (figures of noise compress badly)."
    import base64, io
    from PIL import Image
    data = base64.b64decode("".join(b64))
    if len(data) <= limit: return "".join(b64)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    while True:
        buf = io.BytesIO(); img.quantize(256).save(buf, "PNG", optimize=True)
        if buf.tell() <= limit or img.width < 300: return base64.b64encode(buf.getvalue()).decode()
        img = img.resize((int(img.width * 0.8), int(img.height * 0.8)), Image.LANCZOS)


def execute(path: Path) -> float:
    "Run one notebook's fast cells in a fresh shell (in nbs/, like nbdev_test) and write it back with their outputs."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    os.environ["IN_TEST"] = "1"
    t0, nb = time.time(), read_nb(path)
    for c in nb.cells:
        if c.cell_type == "code": c.outputs, c.execution_count = [], None
    cwd = os.getcwd(); os.chdir(path.parent)
    try: CaptureShell(path).run_all(nb, exc_stop=True, preproc=_skipped)
    finally: os.chdir(cwd)
    write_nb(nb, path)
    import json                                           # keep sources as one string per cell, as the repo stores them
    d = json.loads(path.read_text())
    for c in d["cells"]:
        if isinstance(c["source"], list): c["source"] = "".join(c["source"])
        # audio players embed the whole wav (base64): they are not kept (run the notebook to listen)
        c.get("outputs", [])[:] = [o for o in c.get("outputs", []) if "<audio" not in "".join(o.get("data", {}).get("text/html", ""))]
        for o in c.get("outputs", []):
            if "image/png" in o.get("data", {}): o["data"]["image/png"] = _small_png(o["data"]["image/png"])
    path.write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n")
    return time.time() - t0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)   # worker: one notebook in this process
    a = ap.parse_args()
    nbs = [p.resolve() for p in a.notebooks] or sorted((root / "nbs").glob("[0-9]*.ipynb")) + [root / "nbs" / "index.ipynb"]
    if a.one:
        print(f"{nbs[0].name}: {execute(nbs[0]):.0f} s", flush=True); sys.exit(0)
    todo, running, failed = list(nbs), [], []
    while todo or running:
        while todo and len(running) < a.jobs:
            p = todo.pop(0); running.append((p, subprocess.Popen([sys.executable, __file__, "--one", str(p)])))
        time.sleep(0.5)
        for p, proc in list(running):
            if proc.poll() is not None:
                running.remove((p, proc))
                if proc.returncode: failed.append(p.name)
    if failed: sys.exit(f"failed: {', '.join(failed)} (their outputs were not written)")
