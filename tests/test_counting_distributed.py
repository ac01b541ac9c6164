"""`count_corpus` under `torchrun --nproc_per_node 2` (gloo, CPU) equals a single-process run bit for bit."""
import os, socket, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from codecswap_nb.codecs import ToyCodec
from codecswap_nb.counting import CooccurrenceCounter, count_corpus

TORCHRUN = Path(sys.executable).with_name("torchrun")

DATASET = '''
import numpy as np, torch
class Tones:
    "Deterministic synthetic utterances `(waveform [1, n], sample_rate, ...)`, 16 kHz and 24 kHz mixed."
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        sr = 16000 if i % 3 else 24000
        t = np.arange(int(sr * rng.uniform(0.2, 0.6))) / sr
        f = rng.uniform(200, 3000) * (1 + t)
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.05 * rng.standard_normal(len(t))
        return (torch.from_numpy(x.astype(np.float32))[None], sr, "", "", "spk", "chap", f"utt{i}")
'''
exec(DATASET)

WORKER = DATASET + '''
import sys, torch
from codecswap_nb.codecs import ToyCodec
from codecswap_nb.counting import count_corpus
torch.set_num_threads(1)
mode, window, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
device = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "none" else None  # "cpu": torch accumulator, all-reduced whole
cache = sys.argv[5] if len(sys.argv) > 5 else False  # a codes cache both ranks write their shards to
c = count_corpus(Tones(11), ToyCodec(50.0, 2, 16, 16000, "old"), ToyCodec(75.0, 3, 16, 24000, "new"),
                 mode=mode, window=window, batch_size=2, checkpoint=out, every=2, progress=False, device=device, cache=cache)
import torch.distributed as dist
assert not dist.is_initialized(), "count_corpus must destroy the process group it created"
print("rank", c.meta["corpus"], c.n_files)
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _codecs(): return ToyCodec(50.0, 2, 16, 16000, "old"), ToyCodec(75.0, 3, 16, 24000, "new")


@pytest.mark.parametrize("mode,window,device", [("aligned", 0.01, "none"), ("file", 0.0, "none"), ("aligned", 0.02, "cpu")])
def test_torchrun_two_ranks_equals_single_process(tmp_path, mode, window, device):
    if not TORCHRUN.exists(): pytest.skip("torchrun not installed next to this python")
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "counts.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None); env.pop("RANK", None)
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(tmp_path / "worker.py"), mode, str(window), str(out), device, str(tmp_path / "codes")]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz") == ["counts.npz"]  # shards cleaned up
    assert len(list((tmp_path / "codes").glob("*/shard-*.npz"))) == 2 * 6   # both ranks' codes shards, both codecs

    dist = CooccurrenceCounter.load(out)
    single = count_corpus(Tones(11), *_codecs(), mode=mode, window=window, batch_size=3, progress=False)
    assert dist.meta["corpus"]["complete"] and dist.meta["corpus"]["world_size"] == 2
    assert dist.config == single.config
    assert (dist.n_files, dist.seconds) == (single.n_files, single.seconds) == (11, single.seconds)
    a, b = dist.counts, single.counts
    assert a.nnz > 0
    # bit-identical, not just close: every sum in the counter is exact
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)

    # the finished file is returned as is by a rerun (single process), without counting again
    again = count_corpus(Tones(11), *_codecs(), mode=mode, window=window, checkpoint=out, progress=False)
    assert (again.counts != a).nnz == 0 and not hasattr(again, "timing")


def test_unfinished_single_process_checkpoint_is_refused_by_two_ranks(tmp_path):
    "Resuming needs the same number of processes: files r::world would be split differently."
    out = tmp_path / "counts.npz"

    class Stop(Tones):
        "Interrupted while item 5 is read for encoding (its first read is for the fingerprint)."
        reads = 0
        def __getitem__(self, i):
            if i == 5:
                self.reads += 1
                if self.reads == 2: raise KeyboardInterrupt
            return super().__getitem__(i)
    with pytest.raises(KeyboardInterrupt):
        count_corpus(Stop(11), *_codecs(), mode="aligned", window=0.01, checkpoint=out, every=2, batch_size=2, progress=False,
                     cache=False)
    ck = CooccurrenceCounter.load(out)
    assert ck.meta["corpus"]["done"] == 4 and not ck.meta["corpus"]["complete"]
    if not TORCHRUN.exists(): pytest.skip("torchrun not installed next to this python")
    (tmp_path / "worker.py").write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(tmp_path / "worker.py"), "aligned", "0.01", str(out)]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "does not belong to this run" in r.stdout + r.stderr and "world_size" in r.stdout + r.stderr


def test_backend_follows_the_codec_device(monkeypatch):
    "Under torchrun, codecs on CPU join with gloo even where a GPU exists; codecs on a GPU join with nccl on their GPU."
    import torch.distributed as dist
    from codecswap_nb import counting
    seen = []
    for k, v in dict(WORLD_SIZE="2", RANK="0", LOCAL_RANK="1").items(): monkeypatch.setenv(k, v)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: seen.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.append(f"set_device({d})"))
    for device in ("cpu", None, "cuda:0", "cuda"): assert counting._dist_context(device) == (0, 2, True)
    assert seen == ["gloo", "gloo", "set_device(cuda:0)", "nccl", "set_device(1)", "nccl"]
