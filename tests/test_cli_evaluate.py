"""`codecswap evaluate`: killed mid-row with SIGKILL, `--resume` finishes with the table of an uninterrupted run;
counts from `codecswap count` are read, counts of other codecs or of another split are refused.

Tiny sizes throughout (a 4-speaker embedded corpus, the one-level spectral codecs, a one-layer LM), so every run
takes seconds on one CPU core; the runs are subprocesses of the console script, as a shell would start them."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest

from codecswap_nb.cli import main

BIN = Path(sys.executable).parent
CODECSWAP = shutil.which("codecswap", path=str(BIN)) or shutil.which("codecswap")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
OLD, NEW = "mel_24khz:1", "mfcc_16khz:1"
METHODS = "random,mean+noise,aligned+weighted"
# scratch never plateaus (patience 1000), so every row trains all 100 steps: long enough to be killed inside one
TINY = ["--methods", METHODS, "--steps", "100", "--eval-every", "25", "--patience", "1000", "--old-steps", "30",
        "--old-eval-every", "10", "--batch-size", "8", "--seq-len", "32", "--d-model", "32", "--n-layers", "1",
        "--n-heads", "2", "--max-len", "64"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    "A 4-speaker corpus (train-clean 6, dev-clean 3, test-clean 3 utterances), a codes cache, and the training counts."
    from codecswap_nb.corpus import make_corpus
    tmp = tmp_path_factory.mktemp("evaluate")
    root = make_corpus(tmp / "corpus", n_speakers=4, n_utterances=3)
    cache = tmp / "codes"
    count = ["count", "--old", OLD, "--new", NEW, "--data", str(root), "--subset", "train-clean", "--cache", str(cache), "--quiet"]
    assert main(count + ["--out", str(tmp / "counts.npz")]) == 0
    return dict(tmp=tmp, root=root, cache=cache, count=count, counts=tmp / "counts.npz")


def evaluate_args(s, out, *extra, counts=None):
    "The `codecswap evaluate` command line of the tiny experiment, with the training counts (or `counts`)."
    return [CODECSWAP, "evaluate", "--data", str(s["root"]), "--train-subset", "train-clean", "--old", OLD, "--new", NEW,
            "--counts", f"aligned={counts or s['counts']}", "--cache", str(s["cache"]), "--out", str(out), *TINY, *extra]


def run_to_end(s, out, *extra):
    r = subprocess.run(evaluate_args(s, out, *extra), capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    # progress to a file (not a terminal) is a few plain lines per stage, never a flood of bar redraws
    assert "\r" not in r.stderr and len(r.stderr.splitlines()) < 80, r.stderr[-3000:]
    return r


def table(out: Path) -> dict:
    "What must not change between runs: results.md, and results.json's rows and targets without the timings."
    res = json.loads((out / "results.json").read_text())
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in res["rows"]]
    return dict(md=(out / "results.md").read_text(), rows=rows, targets=res["targets"], partial=res["info"]["partial"])


def test_kill_mid_row_and_resume(setup):
    s = setup
    whole = s["tmp"] / "whole"
    t0 = time.perf_counter()
    run_to_end(s, whole)
    t_whole = time.perf_counter() - t0
    n_rows = len(list((whole / "rows").glob("*.json")))
    assert n_rows == 4

    killed = s["tmp"] / "killed"
    p = subprocess.Popen(evaluate_args(s, killed, "--quiet"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    rows = killed / "rows"
    try:
        deadline = time.time() + 240
        # scratch and the first init are done and the results so far written: the second init trains
        while len(list(rows.glob("*.json"))) < 2 or not (killed / "curves.png").is_file():
            assert p.poll() is None, p.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run never finished two rows"
            time.sleep(0.02)
        done = [json.loads(f.read_text()) for f in rows.glob("*.json")]
        time.sleep(0.4 * min(r["seconds"] for r in done))  # well inside the third row
        assert p.poll() is None and len(list(rows.glob("*.json"))) == 2, "the run left the row it should be killed in"
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    finally:
        if p.poll() is None: p.kill()
        p.stderr.close()
    assert len(list(rows.glob("*.json"))) == 2
    assert table(killed)["partial"] is True                # results so far were written when the second row finished

    r = subprocess.run(evaluate_args(s, killed), capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 1 and "add --resume" in r.stderr, r.stderr   # never continued by accident
    t0 = time.perf_counter()
    run_to_end(s, killed, "--resume")
    t_resume = time.perf_counter() - t0
    a, b = table(whole), table(killed)
    assert b["partial"] is False
    assert a == b
    print(f"uninterrupted {t_whole:.1f} s, resume {t_resume:.1f} s")


@pytest.mark.parametrize("change,needle", [
    ({"--old": "mel_24khz:2"}, "the counts' old codec differs: n_q 1 != 2"),   # counts of the old codec at 2 levels
    ({"--subset": "dev-clean"}, "made on another corpus"),     # counts of another split
])
def test_counts_of_another_experiment_refused(setup, capsys, change, needle):
    s = setup
    argv = list(s["count"])
    for opt, v in change.items(): argv[argv.index(opt) + 1] = v
    other = s["tmp"] / f"other-{'-'.join(change.values()).replace(':', '')}.npz"
    assert main(argv + ["--out", str(other)]) == 0
    out = s["tmp"] / f"refused-{other.stem}"
    st = main(evaluate_args(s, out, "--quiet", counts=other)[1:])
    err = capsys.readouterr().err
    assert st == 1 and "Traceback" not in err, err
    line = [l for l in err.splitlines() if "error:" in l]
    assert len(line) == 1 and line[0].startswith("codecswap evaluate: error:") and needle in line[0], err
    assert not (out / "rows").exists()                     # refused before any training
