#!/usr/bin/env python3
"""Run the tutorial in a real JupyterLab, in headless Chromium, and check what a person would see.

    python tools/browser_test.py [--notebook nbs/20_tutorial_switch_codec.ipynb] [--out browser-test-out]

Starts JupyterLab from this Python environment (`python -m jupyter lab`, 127.0.0.1 only, a random token, a free
port, settings and workspaces in a temporary folder) on a temporary copy of the notebook as committed (its
`#| slow` / `#| gpu` cells skip themselves: CODECSWAP_SLOW, CODECSWAP_GPU and the GPU are hidden from the kernel), opens it in Debian's
`chromium` driven by Playwright (no browser download: `executable_path=shutil.which("chromium")`), clicks
Run > Run All Cells and waits until the kernel is idle and every code cell has an execution count. Then it
checks, from the page: no error output; the explorer widget's dropdown and sliders are rendered, and choosing
another token in the dropdown re-draws the bar chart; `<audio>` players are present and decodable; every
figure is a non-empty, non-blank image. Screenshots and a `report.json` go to `--out` (default
`$BROWSER_TEST_OUT` or `browser-test-out/`). JupyterLab, its kernels and the browser are always stopped.

The notebook defaults to `$CODECSWAP_TUTORIAL_NB`, else the first `nbs/*tutorial*.ipynb`.
Exit status 0 when every check passes; the failures are listed otherwise.
"""
import argparse, contextlib, json, os, re, secrets, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request
from pathlib import Path

root = Path(__file__).resolve().parents[1]


def default_notebook():
    if os.environ.get("CODECSWAP_TUTORIAL_NB"): return Path(os.environ["CODECSWAP_TUTORIAL_NB"])
    found = sorted((root / "nbs").glob("*tutorial*.ipynb"))
    if not found: raise FileNotFoundError("no nbs/*tutorial*.ipynb: pass --notebook or set CODECSWAP_TUTORIAL_NB")
    return found[0]


def default_out(): return Path(os.environ.get("BROWSER_TEST_OUT") or root / "browser-test-out")


def missing_requirements():
    "What is missing to run the test (empty when it can run)."
    miss = []
    if not shutil.which("chromium"): miss.append("chromium (apt-get install chromium)")
    try: import playwright.sync_api  # noqa: F401
    except ImportError: miss.append("playwright (pip install playwright)")
    try: import jupyterlab  # noqa: F401
    except ImportError: miss.append("jupyterlab (pip install jupyterlab)")
    return miss


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(root_dir, workdir, log_path):
    "A JupyterLab server on 127.0.0.1 with a random token; yields (base url, token); stops it and its kernels."
    port, token = free_port(), secrets.token_hex(16)
    settings = workdir / "lab-settings"
    # all cells attached to the DOM (the default windowing skips rendering off-screen cells), no news or update pop-ups
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True, exist_ok=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    # MPLBACKEND (the Makefile exports Agg for headless runs) would stop the kernel's inline figures: a person's
    # JupyterLab does not have it
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    # Run All must not start the demo or the LibriTTS run: the tutorial's slow/gpu cells run when these are set, or a GPU is seen
    for k in ("CODECSWAP_SLOW", "CODECSWAP_GPU"): env.pop(k, None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(workdir / "runtime"), JUPYTER_CONFIG_DIR=str(workdir / "config"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
           "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0: cmd.append("--allow-root")   # CI containers run as root
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None: raise RuntimeError(f"JupyterLab exited with {proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() > deadline: raise TimeoutError(f"JupyterLab did not answer on {url} in 120 s; see {log_path}")
            time.sleep(0.5)
        yield url, token
    finally:
        with contextlib.suppress(ProcessLookupError): os.killpg(proc.pid, signal.SIGTERM)   # server, then its kernels
        try: proc.wait(20)
        except subprocess.TimeoutExpired: pass
        with contextlib.suppress(ProcessLookupError): os.killpg(proc.pid, signal.SIGKILL)   # whatever is left
        proc.wait(); log.close()


# JavaScript evaluated in the page --------------------------------------------------------------------------------
JS_STATE = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt')?.textContent || '').trim());
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {prompts, indicator: ind ? ind.getAttribute('data-status') : null};
}"""

JS_ERRORS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
    const mime = el.getAttribute('data-mime-type') || '';
    const text = el.textContent || '';
    const isErr = el.classList.contains('jp-OutputArea-executeResult') ? false :
      (mime === 'application/vnd.jupyter.stderr' && /Error|Traceback|Exception/.test(text)) ||
      el.closest('.jp-OutputArea-child')?.querySelector('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]') != null;
    if (isErr) out.push(text.slice(0, 2000));
  }
  return out;
}"""

# every <img> in an output area: size, and the spread of its pixels (a blank figure has none)
JS_IMAGES = """async () => {
  const out = [];
  for (const img of document.querySelectorAll('.jp-OutputArea-output img')) {
    if (!img.complete) await new Promise(r => { img.onload = img.onerror = r; });
    const w = img.naturalWidth, h = img.naturalHeight;
    let std = 0, distinct = 0;
    if (w > 0 && h > 0) {
      const c = document.createElement('canvas'); c.width = w; c.height = h;
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, w, h).data; let s = 0, s2 = 0, n = 0; const seen = new Set();
      for (let i = 0; i < d.length; i += 4 * 7) {           // every 7th pixel, grey level
        const g = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; s += g; s2 += g * g; n++;
        if (seen.size < 1000) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      }
      std = Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2)); distinct = seen.size;
    }
    const cell = img.closest('.jp-Cell'); const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
    out.push({cell: cells.indexOf(cell), width: w, height: h, std, distinct,
              in_widget: img.closest('.jupyter-widgets, .widget-output, .jupyter-widgets-output-area') != null});
  }
  return out;
}"""

JS_AUDIO = """async () => {
  const out = [];
  for (const a of document.querySelectorAll('.jp-OutputArea-output audio')) {
    const src = a.currentSrc || a.src || a.querySelector('source')?.src || '';
    const ready_on_arrival = a.readyState;
    if (a.readyState < 1) {
      a.preload = 'metadata';
      await Promise.race([new Promise(r => a.addEventListener('loadedmetadata', r, {once: true})),
                          new Promise(r => a.addEventListener('error', r, {once: true})),
                          new Promise(r => setTimeout(r, 5000))]);
      if (a.readyState < 1) { a.load(); await new Promise(r => setTimeout(r, 1500)); }
    }
    out.push({duration: a.duration, ready: a.readyState, ready_on_arrival, error: a.error ? a.error.code : null,
              src: src.slice(0, 30), src_len: src.length,
              in_widget: a.closest('.jupyter-widgets, .widget-output, .jupyter-widgets-output-area') != null});
  }
  return out;
}"""

# what the explorer's output currently shows: a digest of its chart image(s) and its text
JS_WIDGET_VIEW = """() => {
  const box = document.querySelector('.jp-OutputArea-output .widget-interact');
  if (!box) return null;
  const imgs = [...box.querySelectorAll('img')].map(i => i.src);
  const svgs = [...box.querySelectorAll('svg')].map(s => s.outerHTML);
  let h = 0; for (const s of imgs.concat(svgs).join('|')) h = (h * 31 + s.charCodeAt(0)) | 0;
  return {n_img: imgs.length, n_svg: svgs.length, digest: h, len: imgs.concat(svgs).join('|').length,
          text: [...box.querySelectorAll('.jp-RenderedText')].map(e => e.textContent).join('\\n').slice(0, 3000),
          n_audio: box.querySelectorAll('audio').length};
}"""


# the explorer: stray return values (interact displays what the function returns) and the bar heights of its chart
# (bars in matplotlib's first tab10 colours, one per old level, measured column by column in the image)
JS_WIDGET_FINDINGS = """async () => {
  const box = document.querySelector('.jp-OutputArea-output .widget-interact');
  if (!box) return null;
  const stray = [...box.querySelectorAll('.jp-OutputArea-output[data-mime-type="text/plain"]')].map(e => e.textContent.slice(0, 300));
  const img = box.querySelector('img'); let bars = [];
  if (img && img.naturalWidth) {
    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0); const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const tab = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];
    const bar = (x, y) => { const i = 4 * (y * c.width + x);
      return tab.some(([r, g, b]) => Math.abs(d[i] - r) < 25 && Math.abs(d[i + 1] - g) < 25 && Math.abs(d[i + 2] - b) < 25); };
    let run = null;
    for (let x = 0; x < c.width; x++) {
      let n = 0; for (let y = 0; y < c.height; y++) if (bar(x, y)) n++;
      if (n > 2) { if (!run) run = {x0: x, h: 0}; run.h = Math.max(run.h, n); }
      else if (run) { if (x - run.x0 > 3) bars.push(run.h); run = null; }
    }
  }
  return {stray, bars};
}"""


def wait_for(page, fn, timeout, what, interval=0.5):
    "Poll `fn()` until it returns a truthy value; TimeoutError naming `what`."
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v: return v
        if time.time() > deadline: raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        page.wait_for_timeout(interval * 1000)


def settle(page, timeout):
    """Wait until the kernel is idle and no dialog is open, answering dialogs as a new user would: a fresh JupyterLab
    asks "Select Kernel" for the notebook (Python 3 (ipykernel) preselected) and we click Select. Returns the titles."""
    seen, quiet_since, deadline = [], None, time.time() + timeout
    while time.time() < deadline:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            seen.append(dialog.first.locator(".jp-Dialog-header").text_content().strip())
            dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click()
            quiet_since = None
        elif page.evaluate(JS_STATE)["indicator"] == "idle":
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 3: return seen
        else: quiet_since = None
        page.wait_for_timeout(500)
    raise TimeoutError(f"the kernel was not idle (or a dialog stayed open) after {timeout}s; dialogs: {seen}")


def full_notebook_screenshot(page, path, max_height=16000):
    "The whole notebook in one image: grow the viewport to the notebook's height (JupyterLab scrolls inside a panel)."
    size = page.viewport_size
    # from the top of the notebook, how far below the fold its last cell ends (JupyterLab pads the end of a notebook)
    below = page.evaluate("""() => { for (const e of document.querySelectorAll('.jp-NotebookPanel *')) if (e.scrollTop > 0) e.scrollTop = 0;
        const cells = document.querySelectorAll('.jp-Notebook .jp-Cell');
        return cells.length ? cells[cells.length - 1].getBoundingClientRect().bottom - window.innerHeight : 0; }""")
    page.set_viewport_size({"width": size["width"], "height": int(min(max_height, size["height"] + max(0, below) + 80))})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    page.set_viewport_size(size); page.wait_for_timeout(300)


def run(notebook=None, out=None, timeout=900, headed=False, strict=False):
    "Run the checks; returns the report dict (report['failures'] empty when everything passed)."
    from playwright.sync_api import sync_playwright
    notebook = Path(notebook or default_notebook()).resolve(); out = Path(out or default_out())
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.png"): f.unlink()
    report = dict(notebook=str(notebook.relative_to(root) if notebook.is_relative_to(root) else notebook), failures=[],
                  timings={}, screenshots=[])
    fail = report["failures"].append
    # findings: what a person would find wrong or confusing although nothing failed; failures with strict=True
    report["findings"] = []
    finding = report["failures" if strict else "findings"].append
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="codecswap-browser-") as tmp:
        tmp = Path(tmp); lab_root = tmp / "lab"; lab_root.mkdir()
        nb_copy = lab_root / notebook.name
        shutil.copyfile(notebook, nb_copy)   # the notebook as committed: its `#| slow` / `#| gpu` cells guard themselves
        if (notebook.parent / "images").is_dir(): shutil.copytree(notebook.parent / "images", lab_root / "images")
        with jupyterlab(lab_root, tmp, out / "jupyterlab.log") as (url, token), sync_playwright() as pw:
            report["timings"]["lab_start_s"] = round(time.time() - t0, 1)
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=not headed,
                                         args=["--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"])
            console = []
            try:
                report["browser"] = f"Chromium {browser.version}"
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error",) else None)
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.set_default_timeout(60_000)
                page.goto(f"{url}/lab/tree/{nb_copy.name}?token={token}")
                page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=120_000)
                report["dialogs"] = settle(page, 180)
                page.keyboard.press("Control+b")   # hide the file browser: the notebook gets the width
                report["timings"]["notebook_open_s"] = round(time.time() - t0, 1)
                n_code = len(page.evaluate(JS_STATE)["prompts"])

                # Run > Run All Cells, as a person would
                t_run = time.time()
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
                wait_for(page, lambda: any(p in ("[*]:",) for p in page.evaluate(JS_STATE)["prompts"])
                         or all(re.fullmatch(r"\[\d+\]:", p) for p in page.evaluate(JS_STATE)["prompts"]), 60,
                         "Run All Cells to start")

                def done():   # every cell ran, or an error stopped Run All (the rest stay `[ ]:`; reported below)
                    s = page.evaluate(JS_STATE)
                    if s["indicator"] in ("dead", "terminating"): raise RuntimeError(f"the kernel died: prompts {s['prompts']}")
                    return s["indicator"] == "idle" and (all(re.fullmatch(r"\[\d+\]:", p) for p in s["prompts"])
                                                         or bool(page.evaluate(JS_ERRORS)))
                try:
                    wait_for(page, done, timeout, "every code cell to get an execution count with the kernel idle", interval=1)
                except TimeoutError as e:
                    fail(f"{e}: prompts {page.evaluate(JS_STATE)['prompts']}")
                report["timings"]["run_all_s"] = round(time.time() - t_run, 1)
                page.wait_for_timeout(1500)   # last outputs and widget views attach
                s = page.evaluate(JS_STATE)
                report["code_cells"], report["prompts"] = n_code, s["prompts"]
                if not_run := [i for i, p in enumerate(s["prompts"]) if not re.fullmatch(r"\[\d+\]:", p)]:
                    fail(f"code cells without an execution count after Run All: {not_run} (prompts {s['prompts']})")

                shot = out / "01_after_run_all.png"; full_notebook_screenshot(page, shot); report["screenshots"].append(shot.name)

                errors = page.evaluate(JS_ERRORS)
                report["error_outputs"] = errors
                if errors: fail(f"{len(errors)} error output(s): " + " | ".join(e[:300] for e in errors))

                # the explorer widget: dropdown, sliders, a chart that changes with the dropdown
                widget = page.locator(".jp-OutputArea-output .widget-interact").first
                dropdown = widget.locator(".widget-dropdown select")
                sliders = widget.locator(".widget-slider, .widget-hslider")
                report["widget"] = dict(interact=widget.count(), dropdowns=dropdown.count(), sliders=sliders.count())
                if not widget.count(): fail("the explorer (ipywidgets interact) did not render")
                else:
                    if dropdown.count() < 1: fail("the explorer has no dropdown")
                    if sliders.count() < 2: fail(f"the explorer shows {sliders.count()} slider(s), expected 2 (top, context)")
                    widget.scroll_into_view_if_needed()
                    before = page.evaluate(JS_WIDGET_VIEW)
                    shot = out / "02_widget_before.png"; widget.screenshot(path=str(shot)); report["screenshots"].append(shot.name)
                    if dropdown.count():
                        options = dropdown.locator("option")
                        report["widget"]["options"] = options.count()
                        report["widget"]["selected_before"] = dropdown.evaluate("s => s.options[s.selectedIndex].text")
                        target = options.nth(1).text_content() if options.count() > 1 else None
                        if target is None: fail("the dropdown has fewer than 2 options")
                        else:
                            t_change = time.time()
                            dropdown.select_option(label=target)
                            try:
                                wait_for(page, lambda: (v := page.evaluate(JS_WIDGET_VIEW)) and v["n_img"] + v["n_svg"] > 0
                                         and v["digest"] != before["digest"], 120, "the chart to re-draw after choosing another token")
                                report["timings"]["redraw_chart_s"] = round(time.time() - t_change, 1)
                                wait_for(page, lambda: page.evaluate(JS_WIDGET_VIEW)["n_audio"] >= before["n_audio"], 120,
                                         "the explorer's audio players to come back after the change")
                                report["timings"]["redraw_all_s"] = round(time.time() - t_change, 1)
                            except TimeoutError as e:
                                fail(str(e))
                            page.wait_for_timeout(1000); after = page.evaluate(JS_WIDGET_VIEW)
                            report["widget"]["selected_after"] = target
                            shot = out / "03_widget_after.png"; widget.screenshot(path=str(shot)); report["screenshots"].append(shot.name)
                            report["widget"]["before"], report["widget"]["after"] = before, after
                            if before and before["n_img"] + before["n_svg"] == 0: fail("the explorer showed no chart before the change")
                            if after and after["n_audio"] < 1: fail("the explorer shows no audio players after the change")

                # audio players and figures (after the widget change: these are what a person sees now)
                audio = page.evaluate(JS_AUDIO)
                report["audio"] = audio
                wf = page.evaluate(JS_WIDGET_FINDINGS) or {}
                report["widget"]["bars_px"] = wf.get("bars")
                if wf.get("stray"): finding("the explorer prints explore()'s return value under the players (interact "
                                            f"displays what the function returns): {wf['stray'][0][:120]!r}")
                if len(wf.get("bars") or []) > 1 and max(wf["bars"]) - min(wf["bars"]) <= 1:
                    finding(f"every bar of the explorer's chart has the same height ({len(wf['bars'])} bars of "
                            f"{wf['bars'][0]} px): the chart ranks nothing")
                if short := [round(a["duration"], 2) for a in audio if a["duration"] and a["duration"] < 1]:
                    finding(f"audio clips shorter than a second ({short} s): their players read 0:00 / 0:00")
                if len(audio) < 2: fail(f"{len(audio)} <audio> element(s), expected at least 2")
                for i, a in enumerate(audio):
                    if not a["src_len"] or a["error"] is not None or not (a["duration"] and a["duration"] > 0):
                        fail(f"audio {i} cannot be played: {a}")
                text = page.locator(".jp-Notebook").inner_text()
                if m := re.search(r"[^\n]{0,60}\b(None steps|step None)\b[^\n]{0,40}", text): finding(f"an output says {m.group(1)!r}: {m.group(0)!r}")
                images = page.evaluate(JS_IMAGES)
                report["images"] = images
                if len(images) < 3: fail(f"{len(images)} figure image(s), expected at least 3 (heatmaps, explorer, curves)")
                for i, im in enumerate(images):
                    if im["width"] <= 0 or im["height"] <= 0: fail(f"figure {i} (cell {im['cell']}) is empty: {im}")
                    elif im["std"] < 2 or im["distinct"] < 3: fail(f"figure {i} (cell {im['cell']}) looks blank: {im}")
            except Exception as e:   # record it with a picture of the page, then stop everything
                fail(f"{type(e).__name__}: {e}")
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(out / "failure.png")); report["screenshots"].append("failure.png")
            finally:
                report["console_errors"] = console[:50]
                browser.close()
    report["timings"]["total_s"] = round(time.time() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notebook", default=None, help="default: $CODECSWAP_TUTORIAL_NB or the first nbs/*tutorial*.ipynb")
    ap.add_argument("--out", default=None, help="default: $BROWSER_TEST_OUT or browser-test-out/")
    ap.add_argument("--timeout", type=int, default=900, help="seconds Run All may take (default 900)")
    ap.add_argument("--headed", action="store_true", help="show the browser (needs a display)")
    ap.add_argument("--strict", action="store_true", default=os.environ.get("CODECSWAP_BROWSER_STRICT") == "1",
                    help="findings (confusing but not broken) fail too; default $CODECSWAP_BROWSER_STRICT=1")
    a = ap.parse_args(argv)
    if miss := missing_requirements(): sys.exit("browser test cannot run, missing: " + "; ".join(miss))
    r = run(a.notebook, a.out, a.timeout, a.headed, a.strict)
    print(json.dumps({k: r[k] for k in ("notebook", "timings", "screenshots", "findings", "failures") if k in r}, indent=1))
    out = Path(a.out or default_out())
    print(f"screenshots and report.json in {out}/")
    sys.exit(1 if r["failures"] else 0)


if __name__ == "__main__":
    main()
