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


def test_two_processes_on_one_out(clips, tmp_path, capsys):
    "A second `count` on the `--out` of a running one is refused with its pid and takes nothing from it; a lock left by a"
    " killed run is taken over by the next one."
    out = tmp_path / "run" / "counts.npz"
    lock = out.with_name(out.name + ".lock")
    first = subprocess.Popen([CODECSWAP, *args(clips, out)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while time.time() - t0 < 120 and first.poll() is None:
            if lock.exists() and lock.read_text().strip() == str(first.pid): break
            time.sleep(0.02)
        assert first.poll() is None, f"the first run ended before the second started: {first.stderr.read().decode()[-2000:]}"
        # the second run is this test's own process (torch already imported, so it reaches the lock within milliseconds,
        # while the first one, which took the lock before importing torch, still has seconds of work ahead)
        capsys.readouterr()
        assert main(args(clips, out)) == 1
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and f"already running on it (pid {first.pid})" in errors[0], errors
        assert first.wait(300) == 0, first.stderr.read().decode()[-2000:]
    finally:
        if first.poll() is None: first.kill(); first.wait()
    assert CooccurrenceCounter.load(out).n_files == N_FILES
    assert sorted(p.name for p in out.parent.iterdir()) == ["counts.npz"], "no lock, checkpoint or temporary file is left"

    out2 = tmp_path / "killed" / "counts.npz"
    kill_after_progress([CODECSWAP, *args(clips, out2)], out2.with_suffix(".partial.npz"), 0)
    stale = out2.with_name(out2.name + ".lock")
    assert stale.exists(), "a SIGKILLed run cannot remove its lock file"
    assert main(args(clips, out2, "--resume")) == 0                 # the dead holder's lock is taken over
    assert not stale.exists() and CooccurrenceCounter.load(out2).n_files == N_FILES


def test_skip_bad_then_resume(clips, tmp_path, capsys):
    "A bad file stops the count with its path; `--resume --skip-bad` keeps the progress, skips and records it, and gives"
    " the counts of the corpus without it."
    import soundfile as sf
    data = tmp_path / "data"
    shutil.copytree(clips, data)
    sf.write(data / "clip3.wav", np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")   # a NaN recording
    out = tmp_path / "run" / "counts.npz"
    ckpt = out.with_suffix(".partial.npz")
    capsys.readouterr()
    assert main(args(data, out)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(data / "clip3.wav") in err and "--skip-bad" in err and "wavs[" not in err, err
    assert CooccurrenceCounter.load(ckpt).meta["corpus"]["done"] == 3           # clips 0-2 kept (one file per shard)
    assert main(args(data, out, "--resume")) == 1                              # still refused without --skip-bad
    assert main(args(data, out, "--resume", "--skip-bad")) == 0
    c = CooccurrenceCounter.load(out)
    assert c.meta["skipped"] == [dict(file="clip3.wav", reason=f"{data / 'clip3.wav'} contains NaN or infinite samples: the file is corrupt")]
    assert c.n_files == N_FILES - 1 and not ckpt.exists()
    (data / "clip3.wav").unlink()
    ref = tmp_path / "ref.npz"
    assert main(args(data, ref)) == 0
    assert same(c, CooccurrenceCounter.load(ref))
