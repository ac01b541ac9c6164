"""Interrupting `count_corpus` (an exception, or SIGKILL of the process) and rerunning it gives counts
bit-identical to an uninterrupted run; checkpoints from another run are refused."""
import os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from codecswap_nb.codecs import ToyCodec
from codecswap_nb.counting import CooccurrenceCounter, count_corpus

DATASET = '''
import numpy as np, torch
from pathlib import Path
class Tones:
    "Deterministic synthetic utterances `(waveform [1, n], sample_rate)`."
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        sr = 16000
        t = np.arange(int(sr * rng.uniform(0.2, 0.5))) / sr
        x = np.sin(2 * np.pi * np.cumsum(rng.uniform(200, 3000) * (1 + t)) / sr) + 0.05 * rng.standard_normal(len(t))
        return (torch.from_numpy(x.astype(np.float32))[None], sr)
'''
exec(DATASET)

SLOW_WORKER = DATASET + '''
import sys, time, torch
from codecswap_nb.codecs import ToyCodec
from codecswap_nb.counting import count_corpus
torch.set_num_threads(1)
class SlowToy(ToyCodec):
    def encode_batch(self, wavs, sr, batch_size=8):
        time.sleep(0.4); return super().encode_batch(wavs, sr, batch_size)
count_corpus(Tones(int(sys.argv[2])), SlowToy(50.0, 2, 16, 16000, "old"), ToyCodec(75.0, 3, 16, 24000, "new"),
             mode=sys.argv[3], window=float(sys.argv[4]), batch_size=2, checkpoint=sys.argv[1], every=2, progress=False,
             cache=False)   # no codes cache: every run encodes, slowly
'''

N = 14


def _codecs(): return ToyCodec(50.0, 2, 16, 16000, "old"), ToyCodec(75.0, 3, 16, 24000, "new")


def _same(a, b):
    A, B = a.counts, b.counts
    np.testing.assert_array_equal(A.indptr, B.indptr)
    np.testing.assert_array_equal(A.indices, B.indices)
    np.testing.assert_array_equal(A.data, B.data)
    assert (a.n_files, a.seconds, a.config) == (b.n_files, b.seconds, b.config)


@pytest.mark.parametrize("mode,window", [("aligned", 0.0), ("aligned", 0.02), ("file", 0.0)])
def test_exception_then_resume_is_bit_identical(tmp_path, mode, window):
    full = count_corpus(Tones(N), *_codecs(), mode=mode, window=window, batch_size=3, progress=False)

    class Stop(Tones):
        "Interrupted while item 9 is read for encoding (its first read is for the fingerprint)."
        reads = 0
        def __getitem__(self, i):
            if i == 9:
                self.reads += 1
                if self.reads == 2: raise KeyboardInterrupt
            return super().__getitem__(i)
    ck = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        count_corpus(Stop(N), *_codecs(), mode=mode, window=window, batch_size=3, checkpoint=ck, every=4, progress=False,
                     cache=tmp_path / "codes")
    assert len(list((tmp_path / "codes").glob("*/shard-*.npz"))) == 4   # two shards of 4 files, both codecs
    part = CooccurrenceCounter.load(ck)
    assert (part.meta["corpus"]["done"], part.n_files, part.meta["corpus"]["complete"]) == (8, 8, False)
    resumed = count_corpus(Tones(N), *_codecs(), mode=mode, window=window, batch_size=3, checkpoint=ck, every=4, progress=False,
                           cache=tmp_path / "codes")
    _same(resumed, full)
    _same(CooccurrenceCounter.load(ck), full)
    assert CooccurrenceCounter.load(ck).meta["corpus"]["complete"]


def test_killed_process_then_resume_is_bit_identical(tmp_path):
    full = count_corpus(Tones(N), *_codecs(), mode="aligned", window=0.01, batch_size=2, progress=False)
    (tmp_path / "worker.py").write_text(SLOW_WORKER)
    ck = tmp_path / "run.npz"
    p = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(ck), str(N), "aligned", "0.01"],
                         env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not ck.exists() and p.poll() is None and time.time() < deadline: time.sleep(0.05)
        assert ck.exists(), f"worker wrote no checkpoint: {p.communicate()[0][-2000:]!r}"
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None: p.kill()
    part = CooccurrenceCounter.load(ck)  # a kill during a save leaves the previous checkpoint: writes are atomic
    done = part.meta["corpus"]["done"]
    assert 0 < done < N and done % 2 == 0 and part.n_files == done, part.meta
    (tmp_path / ".run.npz.abc123.tmp").write_bytes(b"half a save")  # as a kill during `save` would leave
    resumed = count_corpus(Tones(N), *_codecs(), mode="aligned", window=0.01, batch_size=2, checkpoint=ck, every=2, progress=False)
    _same(resumed, full)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_checkpoint_from_another_run_is_refused(tmp_path):
    ck = tmp_path / "run.npz"
    count_corpus(Tones(6), *_codecs(), mode="aligned", window=0.01, checkpoint=ck, every=2, progress=False)
    old, new = _codecs()
    with pytest.raises(ValueError, match="does not belong.*new_codec"):
        count_corpus(Tones(6), old, ToyCodec(75.0, 3, 16, 24000, "another"), window=0.01, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="does not belong.*old"):  # other vocabulary
        count_corpus(Tones(6), ToyCodec(50.0, 4, 16, 16000, "old"), new, window=0.01, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="window"):
        count_corpus(Tones(6), old, new, window=0.02, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="mode"):
        count_corpus(Tones(6), old, new, mode="file", checkpoint=ck, progress=False)

    class Changed(Tones):
        "The same number of utterances, one of them other audio."
        def __getitem__(self, i): return super().__getitem__(i + 100 if i == 0 else i)
    with pytest.raises(ValueError, match="fingerprint"):
        count_corpus(Changed(6), old, new, window=0.01, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="new_codec weights_id 'peak-bands-v1' != 'v2'"):
        reweighted = ToyCodec(75.0, 3, 16, 24000, "new"); reweighted.weights_id = "v2"
        count_corpus(Tones(6), old, reweighted, window=0.01, checkpoint=ck, progress=False)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="corrupted"):
        count_corpus(Tones(6), old, new, window=0.01, checkpoint=tmp_path / "junk.npz", progress=False)
    # the refused runs did not touch the checkpoint
    assert CooccurrenceCounter.load(ck).meta["corpus"]["complete"]
