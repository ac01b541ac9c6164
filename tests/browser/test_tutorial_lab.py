"""The tutorial in a real JupyterLab, in headless Chromium: a thin pytest wrapper of tools/browser_test.py.

Skipped (with the reason) when `chromium` or `playwright` is missing, unless CODECSWAP_BROWSER_TEST=1 requires the
test (then it fails): `make browser-test` installs what is missing and sets it. What a person would find wrong
although nothing failed (stray return values, a chart of ties, ...) is reported as warnings ("findings");
CODECSWAP_BROWSER_STRICT=1 makes them failures. Screenshots and report.json: $BROWSER_TEST_OUT or browser-test-out/.
The notebook: $CODECSWAP_TUTORIAL_NB, else the first nbs/*tutorial*.ipynb.
"""
import importlib.util, os, sys, warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("codecswap_browser_test", ROOT / "tools" / "browser_test.py")
bt = importlib.util.module_from_spec(_spec); sys.modules[_spec.name] = bt; _spec.loader.exec_module(bt)


def test_tutorial_runs_in_jupyterlab():
    if missing := bt.missing_requirements():
        msg = "browser test needs " + "; ".join(missing) + " (`make browser-test` installs them)"
        if os.environ.get("CODECSWAP_BROWSER_TEST") == "1": pytest.fail(msg + "; CODECSWAP_BROWSER_TEST=1 requires it")
        pytest.skip(msg + "; set CODECSWAP_BROWSER_TEST=1 to make this a failure")
    r = bt.run(strict=os.environ.get("CODECSWAP_BROWSER_STRICT") == "1")
    out = bt.default_out()
    print(f"\nbrowser test of {r['notebook']} ({r.get('browser')}): {r['timings']}; screenshots {r['screenshots']} in {out}/")
    for f in r["findings"]: warnings.warn(f"tutorial finding: {f}", UserWarning)
    assert not r["failures"], f"{len(r['failures'])} failure(s), see {out}/ (screenshots, report.json, jupyterlab.log):\n" + \
        "\n".join(f"- {f}" for f in r["failures"])
