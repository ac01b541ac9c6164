"""Packaging: every third-party module the package imports is a declared runtime requirement.

`test_imports_are_runtime_requirements` is cheap and always runs: it walks the AST of `codecswap_nb/*.py`
(imports inside functions included) and of the user-facing tutorial, maps each third-party top-level module
to its distribution (`IMPORT_TO_DIST`) and checks that distribution is in settings.ini `requirements` (not
only in `dev_requirements`).

`test_fresh_install` is the real proof and takes minutes (torch and its CUDA wheels): a fresh venv,
`pip install <repo>` (not editable), `pip check`, then the imports and the CLI from a directory outside the
repository. It runs only when asked: `CODECSWAP_PACKAGING_TEST=1 pytest tests/test_packaging.py` or
`make packaging-check`.
"""
import ast, configparser, os, re, shlex, shutil, subprocess, sys, venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# import name -> distribution name on PyPI, for every third-party module the package or the tutorial may import.
# A new third-party import fails `test_imports_are_runtime_requirements` until it is added here *and* to
# settings.ini `requirements`.
IMPORT_TO_DIST = {
    "torch": "torch", "torchaudio": "torchaudio", "encodec": "encodec",
    "dac": "descript-audio-codec", "audiotools": "descript-audiotools",
    "numpy": "numpy", "scipy": "scipy", "matplotlib": "matplotlib", "soundfile": "soundfile", "tqdm": "tqdm",
    "espeakng_loader": "espeakng-loader", "safetensors": "safetensors", "fastcore": "fastcore",
    "ipywidgets": "ipywidgets", "IPython": "ipython", "jupyterlab": "jupyterlab",
    "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "transformers": "transformers",
}


def _norm(dist): return re.sub(r"[-_.]+", "-", dist).lower()


def _reqs(key):
    "Distribution names (normalised, no version specifiers) of a settings.ini requirements line."
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return {_norm(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in shlex.split(cfg["DEFAULT"].get(key, ""))}


def _top_imports(tree):
    "Top-level names of absolute imports anywhere in `tree` (function bodies, try/except, if blocks included)."
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names: yield a.name.split(".")[0], n.lineno
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            yield n.module.split(".")[0], n.lineno


def _third_party(sources):
    "{module: [where, ...]} for the third-party imports of `sources` ({label: python source})."
    own = {"codecswap_nb"}
    found = {}
    for label, src in sources.items():
        for mod, line in _top_imports(ast.parse(src)):
            if mod in sys.stdlib_module_names or mod in own: continue
            found.setdefault(mod, []).append(f"{label}:{line}")
    return found


def _package_sources():
    return {f"codecswap_nb/{p.name}": p.read_text(encoding="utf-8") for p in sorted((ROOT / "codecswap_nb").glob("*.py"))}


def _tutorial_sources():
    "Code cells of the tutorial notebook(s) a user runs after `pip install codecswap_nb` (magics dropped)."
    import json
    out = {}
    for nb in sorted((ROOT / "nbs").glob("*tutorial*.ipynb")):
        for i, c in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            if c["cell_type"] != "code": continue
            src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
            out[f"nbs/{nb.name} cell {i}"] = src
    return out


def test_imports_are_runtime_requirements():
    runtime = _reqs("requirements")
    found = _third_party({**_package_sources(), **_tutorial_sources()})
    assert {"torch", "fastcore", "safetensors"} <= set(found), f"the AST walk missed known imports: {sorted(found)}"
    unmapped = {m: w for m, w in found.items() if m not in IMPORT_TO_DIST}
    assert not unmapped, f"third-party imports with no entry in IMPORT_TO_DIST (add import -> distribution): {unmapped}"
    missing = {IMPORT_TO_DIST[m]: w for m, w in found.items() if _norm(IMPORT_TO_DIST[m]) not in runtime}
    assert not missing, ("imported at run time but not in settings.ini `requirements` "
                         f"(dev_requirements are not installed by `pip install codecswap_nb`): {missing}")


def test_requirement_lines_parse():
    "setup.py splits both lines the same way (shlex); a pinned stack that keeps its pins."
    runtime, dev = _reqs("requirements"), _reqs("dev_requirements")
    assert {"torch", "torchaudio", "encodec", "descript-audio-codec", "descript-audiotools", "fastcore"} <= runtime
    assert not runtime & dev, f"listed as both runtime and dev requirement: {runtime & dev}"


# ---------------------------------------------------------------------------------------------- fresh install
def _tree_copy(dst):
    "The repository as pip would see it from a clean checkout: tracked and untracked-but-not-ignored files."
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):   # not a git checkout (an sdist): copy all but build outputs
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".venv", "venv", "build", "dist", "*.egg-info", "_docs", "_proc"))
        return dst
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst / f)
    return dst


@pytest.mark.skipif(os.environ.get("CODECSWAP_PACKAGING_TEST") != "1",
                    reason="fresh venv + non-editable install takes minutes: set CODECSWAP_PACKAGING_TEST=1 (make packaging-check)")
def test_fresh_install(tmp_path):
    src, env_dir, outside = _tree_copy(tmp_path / "src"), tmp_path / "venv", tmp_path / "elsewhere"
    src.mkdir(exist_ok=True); outside.mkdir()
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               CODECSWAP_CACHE=str(tmp_path / "cache"), PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    def run(*args, timeout=1800, cwd=outside):
        r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        log = "\n".join(l for l in (r.stdout + r.stderr).splitlines() if "is ignored: it is neither a file" not in l)
        assert r.returncode == 0, f"`{' '.join(map(str, args))}` exited {r.returncode}:\n{log[-6000:]}"
        return r

    run(py, "-m", "pip", "install", "-q", str(src))
    run(py, "-m", "pip", "check")
    r = run(py, "-c", "import codecswap_nb, codecswap_nb.counting, codecswap_nb.evaluate, codecswap_nb.cli; "
                      "print(codecswap_nb.__file__)")
    assert str(env_dir) in r.stdout, f"imported codecswap_nb from {r.stdout.strip()}, not from the fresh venv"
    assert "Location" not in r.stdout
    # the shipped codec weights are package data: they load (sha256-checked) from the installed copy
    r = run(py, "-c", "from codecswap_nb.codecs import load_codec, list_codecs; import codecswap_nb.codecs as c; "
                      "print(c.weights_folder()); [load_codec(n) for n in list_codecs() if n in c.BUILTIN_ELSEWHERE]")
    assert str(env_dir) in r.stdout, f"shipped weights read from {r.stdout.strip()}, not from the installed package"
    run(env_dir / "bin" / "codecswap", "--help")
    run(env_dir / "bin" / "codecswap", "corpus", tmp_path / "x", "--speakers", "2", "--utterances", "1", timeout=600)
    assert list((tmp_path / "x").rglob("*.wav")), "codecswap corpus wrote no wav files"
