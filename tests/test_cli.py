"""The `codecswap` command line: exit codes, messages, every command on a tiny corpus, torchrun.

Subprocess runs check what a shell sees (exit status, one-line errors, the console script); everything
else calls `codecswap_nb.cli.main` in-process, which is much faster (no torch import per call).
"""
import json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from codecswap_nb.cli import main

BIN = Path(sys.executable).parent
CODECSWAP = shutil.which("codecswap", path=str(BIN)) or shutil.which("codecswap")
# EnCodec 24 kHz with seeded random weights (k-means codebooks, built once and cached): the fastest codec on
# CPU, at 1.5 kbps (2 levels) as the old codec and 3 kbps (4 levels) as the new one.
OLD, NEW = "encodec_24khz:1.5", "encodec_24khz:3"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")


def sh(*args, timeout=300, **kw):
    "Run the console script; CompletedProcess with text output."
    return subprocess.run([CODECSWAP, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV, **kw)


def inproc(capsys, *args):
    "Run `main` in-process: (status, stdout, stderr)."
    st = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return st, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    "A 2 speakers x 2 utterances LibriTTS-layout corpus, built by the CLI itself."
    root = tmp_path_factory.mktemp("corpus")
    st = main(["corpus", str(root), "--speakers", "2", "--utterances", "2", "--quiet"])
    assert st == 0
    return root


@pytest.fixture(scope="module")
def counts(corpus, tmp_path_factory):
    "Counts of the tiny corpus (train-clean) written by `codecswap count`."
    out = tmp_path_factory.mktemp("counts") / "counts.npz"
    st = main(["count", "--old", OLD, "--new", NEW, "--weights", "random", "--data", str(corpus),
               "--subset", "train-clean", "--out", str(out), "--batch-size", "2", "--quiet"])
    assert st == 0 and out.is_file()
    return out


def test_console_script_installed():
    assert CODECSWAP is not None, "the console script `codecswap` is not installed: pip install -e ."


def test_help_and_version():
    r = sh("--help")
    assert r.returncode == 0, r.stderr
    for cmd in ("corpus", "count", "inspect", "transfer", "evaluate", "demo"):
        assert cmd in r.stdout
    r = sh("--version")
    assert r.returncode == 0 and r.stdout.startswith("codecswap_nb ")


@pytest.mark.parametrize("cmd", ["corpus", "count", "inspect", "transfer", "evaluate", "demo"])
def test_every_command_has_help(capsys, cmd):
    st, out, _ = inproc(capsys, cmd, "--help")
    assert st == 0 and out.startswith(f"usage: codecswap {cmd}")


def _one_line_error(stderr):
    "The error lines of stderr (not usage lines); asserts there is no traceback."
    assert "Traceback" not in stderr, stderr
    errs = [l for l in stderr.splitlines() if "error:" in l]
    assert len(errs) == 1, stderr
    return errs[0]


def test_usage_error_exit_2():
    r = sh("count", "--old", "encodec_24khz:6", "--data", "x", "--out", "c.npz")
    assert r.returncode == 2
    assert "--new" in _one_line_error(r.stderr)
    assert r.stderr.startswith("usage: codecswap count")


@pytest.mark.parametrize("argv,needle", [
    ([], "COMMAND"),
    (["frobnicate"], "frobnicate"),
    (["count", "--old", "nosuchcodec", "--new", NEW, "--data", "d", "--out", "c.npz"], "nosuchcodec"),
    (["count", "--old", OLD, "--new", NEW, "--data", "d", "--out", "c.npz", "--every", "0"], "--every"),
    (["count", "--old", OLD, "--new", NEW, "--data", "d", "--out", "c.npz", "--window", "-1"], "--window"),
    (["count", "--old", OLD, "--new", NEW, "--data", "d", "--out", "c.npz", "--mode", "bag"], "--mode"),
    (["count", "--old", OLD, "--new", NEW, "--data", "d", "--out", "counts.txt"], ".npz"),
    (["count", "--old", OLD, "--new", NEW, "--data", "d", "--out", "c.npz", "--weights", "w.pt"], "--old-weights"),
    (["corpus", "out", "--speakers", "zero"], "--speakers"),
    (["inspect", "c.npz", "--plot", "heat.txt"], ".png"),
])
def test_usage_errors_in_process(capsys, argv, needle):
    st, out, err = inproc(capsys, *argv)
    assert st == 2, err
    assert needle in err, err
    assert "Traceback" not in err


def test_failure_exit_1_one_line(tmp_path):
    r = sh("inspect", tmp_path / "missing.npz")
    assert r.returncode == 1
    line = _one_line_error(r.stderr)
    assert "missing.npz" in line and line.startswith("codecswap inspect: error:")
    r = sh("inspect", tmp_path / "missing.npz", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_count_missing_data(capsys, tmp_path):
    st, _, err = inproc(capsys, "count", "--old", OLD, "--new", NEW, "--weights", "random",
                        "--data", tmp_path / "nope", "--out", tmp_path / "c.npz")
    assert st == 1 and "nope" in _one_line_error(err)
    assert not (tmp_path / "c.npz").exists()


def test_count_missing_subset(capsys, corpus, tmp_path):
    st, _, err = inproc(capsys, "count", "--old", OLD, "--new", NEW, "--weights", "random",
                        "--data", corpus, "--subset", "train-other-500", "--out", tmp_path / "c.npz")
    assert st == 1 and "train-other-500" in _one_line_error(err)
    assert not (tmp_path / "c.npz").exists()


def test_count_and_inspect(capsys, counts, tmp_path):
    from codecswap_nb.counting import CooccurrenceCounter
    c = CooccurrenceCounter.load(counts)
    assert c.n_files == 2 and c.seconds > 0 and c.counts.nnz > 0
    assert c.counts.shape == (4 * 1024, 2 * 1024)
    assert not counts.with_suffix(".partial.npz").exists(), "the checkpoint is removed once the counts are written"

    st, out, _ = inproc(capsys, "inspect", counts, "--json")
    assert st == 0
    s = json.loads(out)
    assert s["files"] == 2 and s["old"]["vocab"] == 2048 and s["new"]["vocab"] == 4096
    assert s["new"]["unseen"] == 4096 - int((np.asarray(c.counts.sum(1)).ravel() > 0).sum())
    assert len(s["top1"]) == 4 and len(s["top1"][0]) == 2
    # the first two levels of EnCodec at 3 kbps are EnCodec at 1.5 kbps: a one-to-one mapping
    assert s["top1"][0][0] == 1.0 and s["top1"][1][1] == 1.0

    png = tmp_path / "plots" / "heat.png"
    st, out, _ = inproc(capsys, "inspect", counts, "--plot", png)
    assert st == 0 and "coverage" in out and "never seen" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quiet_prints_nothing(capsys, counts):
    st, out, err = inproc(capsys, "inspect", counts, "--quiet")
    assert st == 0 and out == "" and err == ""


def test_audio_folder_matches_libritts(capsys, corpus, counts, tmp_path):
    "--data accepts a plain folder of audio files: the same files give the same counts."
    from codecswap_nb.counting import CooccurrenceCounter
    folder = tmp_path / "wavs"
    shutil.copytree(corpus / "LibriTTS" / "train-clean", folder)
    out = tmp_path / "folder.npz"
    st, _, err = inproc(capsys, "count", "--old", OLD, "--new", NEW, "--weights", "random", "--data", folder,
                        "--out", out, "--batch-size", "2", "--quiet")
    assert st == 0, err
    a, b = CooccurrenceCounter.load(counts).counts, CooccurrenceCounter.load(out).counts
    assert (a != b).nnz == 0


def test_corpus_command(capsys, corpus):
    from codecswap_nb.audio import LibriTTS
    assert len(LibriTTS(corpus, "train-clean")) + len(LibriTTS(corpus, "dev-clean")) == 4
    st, out, _ = inproc(capsys, "corpus", corpus, "--speakers", "2", "--utterances", "2")
    assert st == 0 and "train-clean" in out


def test_torchrun_two_processes(counts, corpus, tmp_path):
    "Two CPU processes under torchrun count the same matrix as one process."
    from codecswap_nb.counting import CooccurrenceCounter
    out = tmp_path / "dist.npz"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--no-python", CODECSWAP, "count", "--old", OLD,
           "--new", NEW, "--weights", "random", "--data", str(corpus), "--subset", "train-clean",
           "--out", str(out), "--batch-size", "1", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = CooccurrenceCounter.load(counts), CooccurrenceCounter.load(out)
    assert (a.counts != b.counts).nnz == 0 and a.n_files == b.n_files


def test_demo_passes_options_through(capsys, monkeypatch, tmp_path):
    "`codecswap demo` hands --pair, --threads and progress to evaluate.run_demo, which takes them (the demo itself is tested with evaluate)."
    import inspect
    import codecswap_nb.evaluate as ev
    real, seen = inspect.signature(ev.run_demo), {}
    def fake_run_demo(out, **kw):
        real.bind(out, **kw)                                   # only options the real run_demo takes
        print("talking on stdout")
        seen.clear(); seen.update(kw, out=out)
    monkeypatch.setattr(ev, "run_demo", fake_run_demo)
    st, out, _ = inproc(capsys, "demo", "--out", tmp_path / "d", "--pair", "trained", "--threads", "1", "--quiet")
    assert st == 0 and out == ""
    assert seen == dict(out=str(tmp_path / "d"), pair="trained", threads=1, progress=False)
    st, out, _ = inproc(capsys, "demo", "--out", tmp_path / "d")
    assert st == 0 and "talking on stdout" in out and seen == dict(out=str(tmp_path / "d"), pair="spectral", threads=None, progress=True)
    st, out, _ = inproc(capsys, "demo", "--no-progress")
    assert st == 0 and "talking on stdout" in out and seen["progress"] is False and seen["out"] == "codecswap-demo"
    for dead in (["--steps", "3"], ["--old", "encodec_24khz:1.5"], ["--weights", "random"], ["--pair", "wavelet"]):
        st, _, err = inproc(capsys, "demo", *dead)
        assert st == 2 and dead[0] in err, err
