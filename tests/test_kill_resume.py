"""`codecswap count` survives `kill -9`: the checkpoint on disk is always a loadable, consistent partial
count, and `--resume` finishes with counts bit-identical to an uninterrupted run."""
import os, shutil, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from codecswap_nb.cli import main
from codecswap_nb.counting import CooccurrenceCounter

BIN = Path(sys.executable).parent
CODECSWAP = shutil.which("codecswap", path=str(BIN)) or shutil.which("codecswap")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
N_FILES = 8
# EnCodec with seeded random weights (k-means codebooks, built once and cached): the fastest codec on CPU
OLD, NEW = "encodec_24khz:1.5", "encodec_24khz:3"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    "A folder of N_FILES short, different sounds (0.6 s each: tones gliding under noise), read as an AudioFolder."
    from codecswap_nb.audio import save_audio
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    t = np.arange(int(0.6 * 16000)) / 16000
    for i in range(N_FILES):
        f0, f1 = rng.uniform(100, 2000, 2)
        x = 0.3 * np.sin(2 * np.pi * (f0 + (f1 - f0) * t / 1.2) * t) * np.hanning(t.size) + 0.02 * rng.standard_normal(t.size)
        save_audio(root / f"clip{i}.wav", x.astype(np.float32), 16000)
    return root


def args(data, out, *extra, quiet=True, cache=None):
    "`codecswap count` arguments; codes cached in `cache` (None: not cached)."
    keep = ["--cache", str(cache)] if cache else ["--no-cache"]
    return ["count", "--old", OLD, "--new", NEW, "--weights", "random", "--data", str(data),
            "--out", str(out), "--every", "1", "--batch-size", "1", *keep, *extra] + ["--quiet"] * quiet


def kill_after_progress(cmd, ckpt, more_than, timeout=240):
    "Start `cmd`, SIGKILL it as soon as `ckpt` holds more than `more_than` files; return the files it held."
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0, seen = time.time(), more_than
    try:
        while time.time() - t0 < timeout and p.poll() is None:
            if ckpt.exists():
                # read while the writer may be replacing it: must never be a half-written file
                seen = CooccurrenceCounter.load(ckpt).n_files
                if seen > more_than: break
            time.sleep(0.02)
        assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None: p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    return seen


def same(a, b):
    "Bit-identical counters: the same sparse structure, the same float64 bits, files and seconds."
    A, B = a.counts, b.counts
    A.sort_indices(); B.sort_indices()
    return (A.shape == B.shape and np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)
            and A.data.tobytes() == B.data.tobytes() and a.n_files == b.n_files and a.seconds == b.seconds)


def test_kill_then_resume_is_bit_identical(clips, tmp_path, capsys):
    ref = tmp_path / "ref" / "counts.npz"
    assert main(args(clips, ref)) == 0
    out = tmp_path / "run" / "counts.npz"
    ckpt = out.with_suffix(".partial.npz")

    codes = tmp_path / "codes"                            # the killed runs keep their codes: a resume reads them back
    n1 = kill_after_progress([CODECSWAP, *args(clips, out, cache=codes)], ckpt, 0)
    assert not out.exists(), "a killed run must not leave an output file"
    part = CooccurrenceCounter.load(ckpt)                 # the checkpoint survived the kill intact
    assert 0 < part.n_files < N_FILES and part.n_files >= n1
    assert part.counts.sum() > 0

    # killed again while resuming: the checkpoint only ever moves forward and stays loadable
    n2 = kill_after_progress([CODECSWAP, *args(clips, out, "--resume", cache=codes)], ckpt, part.n_files)
    part2 = CooccurrenceCounter.load(ckpt)
    assert part.n_files < part2.n_files < N_FILES and not out.exists()
    assert part2.n_files >= n2

    capsys.readouterr()
    assert main(args(clips, out, "--resume", quiet=False, cache=codes)) == 0   # not quiet, to see it resume
    assert f"resuming from {ckpt}" in capsys.readouterr().out
    assert not ckpt.exists(), "the checkpoint is removed once the counts are written"
    assert same(CooccurrenceCounter.load(out), CooccurrenceCounter.load(ref))
    leftovers = [p.name for p in out.parent.iterdir() if p.name != out.name]
    assert not leftovers, leftovers
