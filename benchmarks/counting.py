"""Benchmark of codecswap_nb.counting (prints ratios; no pass/fail).

1. The write-up's Python loop vs `mode="file"`, one codebook of 1024, 420 and 3360 frames per file (target >= 1000x).
2. `mode="aligned"` throughput for EnCodec-24k-shaped (8 x 1024 @ 75 Hz) x DAC-44k-shaped (9 x 1024 @ 86.1 Hz) codes.
3. Counting time as a fraction of the two codecs' encode time inside `count_corpus` (target <= 5%).
4. Peak memory when counting 10x more files (should stay flat: counting streams).
Run: python benchmarks/counting.py   (about 1-2 minutes on one CPU core)
"""
import tempfile, time, tracemalloc
from collections import defaultdict

import numpy as np
import torch

from codecswap_nb.codecs import CodecInfo, ToyCodec
from codecswap_nb.counting import CooccurrenceCounter, count_corpus

torch.set_num_threads(1)
rng = np.random.default_rng(0)


def info(n_q, K, frame_rate):
    "The identity of a made-up codec that gives random codes."
    return CodecInfo(f"random{n_q}x{K}", n_q, K, sample_rate=24000, frame_rate=frame_rate)


def writeup_loop(files):
    "The write-up's build_codec_mapping (per-pair Python increments into nested dicts)."
    cooccurrence = defaultdict(lambda: defaultdict(int))
    for old_tokens, new_tokens in files:
        for old_tok in old_tokens:
            for new_tok in new_tokens:
                cooccurrence[new_tok][old_tok] += 1
    return cooccurrence


def file_mode(files, K=1024):
    c = CooccurrenceCounter(info(1, K, 75.0), info(1, K, 75.0), mode="file")
    for o, n in files: c.update(o[None], n[None])
    return c.counts


print("== 1. write-up loop vs mode='file' (1 codebook x 1024, random tokens)")
for T, n_base in ((420, 6), (3360, 1)):
    files = [(rng.integers(0, 1024, T), rng.integers(0, 1024, T)) for _ in range(256)]
    base = [(o.tolist(), n.tolist()) for o, n in files[:n_base]]
    t0 = time.perf_counter(); d = writeup_loop(base); t_loop = (time.perf_counter() - t0) / n_base
    t0 = time.perf_counter(); M = file_mode(files[:n_base]); t_same = (time.perf_counter() - t0) / n_base
    t0 = time.perf_counter(); file_mode(files); t_file = (time.perf_counter() - t0) / len(files)
    r, c = zip(*[(a, b) for a, row in d.items() for b in row])
    assert np.array_equal(np.asarray(M[list(r), list(c)]).ravel(), [d[a][b] for a, b in zip(r, c)]) and M.sum() == sum(map(sum, (row.values() for row in d.values())))
    print(f"T={T:5d}: loop {t_loop*1e3:9.1f} ms/file | file mode {t_same*1e3:7.2f} ms/file on the same {n_base} file(s) "
          f"({t_loop/t_same:7.0f}x), {t_file*1e3:6.3f} ms/file over 256 files ({t_loop/t_file:7.0f}x) | equal: True")

print("\n== 2. mode='aligned' throughput, EnCodec-24k (8 x 1024 @ 75 Hz) old x DAC-44k (9 x 1024 @ 86.13 Hz) new")
FR_OLD, FR_NEW, SEC = 75.0, 44100 / 512, 10.0
files = [(torch.from_numpy(rng.integers(0, 1024, (8, int(SEC * FR_OLD)))),
          torch.from_numpy(rng.integers(0, 1024, (9, int(SEC * FR_NEW))))) for _ in range(24)]
sync = lambda: torch.cuda.synchronize() if torch.cuda.is_available() else None
for device in [None] + (["cuda"] if torch.cuda.is_available() else []):  # scipy on CPU; dense torch accumulator on GPU
    for window in (0.0, 0.02):
        c = CooccurrenceCounter(info(8, 1024, FR_OLD), info(9, 1024, FR_NEW), mode="aligned", window=window, device=device)
        for o, n in files[:2]: c.update(o, n)  # warm-up (kernels, allocator), then count on a fresh counter
        c.fold(); c = CooccurrenceCounter(info(8, 1024, FR_OLD), info(9, 1024, FR_NEW), mode="aligned", window=window, device=device)
        sync(); t0 = time.perf_counter()
        for o, n in files: c.update(o, n)
        c.fold(); sync(); dt = time.perf_counter() - t0
        t0 = time.perf_counter(); M = c.counts; dt_csr = time.perf_counter() - t0
        nf = sum(n.shape[1] for _, n in files)
        print(f"{device or 'cpu/scipy':9s} window={window:4.2f}s: {nf/dt:9.0f} new frames/s ({nf*9/dt:9.0f} new tokens/s), "
              f"{len(files)*SEC/dt:6.0f}x real time, nnz={M.nnz}; reading the csr counts once: {dt_csr:.2f} s")

print("\n== 3. counting share of count_corpus time (encode vs count)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
try:
    from codecswap_nb.codecs import load_codec
    old_codec = load_codec("encodec_24khz", bandwidth=6.0, weights="random", device=DEVICE)
    new_codec = load_codec("dac_44khz", weights="random", device=DEVICE)
    label = f"random-weight encodec_24khz (6 kbps, 8 levels) -> dac_44khz (9 levels) on {DEVICE}"
except Exception as e:  # codecs module not built / weights unavailable
    old_codec, new_codec = ToyCodec(75.0, 8, 1024, 24000, "toy75"), ToyCodec(44100 / 512, 9, 1024, 44100, "toy86")
    label = f"ToyCodec stand-ins (codecswap_nb.codecs unavailable: {type(e).__name__}: {e}); NOT meaningful for real codecs"


class Speechy:
    "Synthetic 24 kHz utterances of 2-3 s."
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i):
        g = np.random.default_rng(i); sr = 24000
        t = np.arange(int(sr * g.uniform(2, 3))) / sr
        x = np.sin(2 * np.pi * np.cumsum(g.uniform(100, 400) * (1 + 0.3 * np.sin(3 * t))) / sr) * (0.5 + 0.5 * np.sin(5 * t))
        return (torch.from_numpy((x + 0.02 * g.standard_normal(len(t))).astype(np.float32))[None], sr)


print(label)
# Warm up first (codec kernels, cuBLAS, the accumulator's kernels) on other audio, so that one-off start-up costs
# are not charged to either side; then encode each utterance once, into a codes cache that the other settings read.
N_FILES, BATCH = (64, 16) if DEVICE == "cuda" else (4, 4)
count_corpus(Speechy(2), old_codec, new_codec, mode="aligned", window=0.02, batch_size=2, progress=False, cache=False)
count_corpus(Speechy(2), old_codec, new_codec, mode="file", batch_size=2, progress=False, cache=False)
ds = [Speechy(N_FILES + 2)[i] for i in range(2, N_FILES + 2)]
cache, enc = tempfile.mkdtemp(prefix="codecswap-bench-"), None
for mode, window in (("aligned", 0.0), ("aligned", 0.02), ("file", 0.0)):
    c = count_corpus(ds, old_codec, new_codec, mode=mode, window=window, batch_size=BATCH, progress=False, cache=cache)
    tm = c.timing; enc = enc or tm["encode_s"]
    print(f"  mode={mode:7s} window={window:4.2f}s: encode {enc:.2f} s, count {tm['count_s']*1e3:.1f} ms "
          f"-> counting = {100 * tm['count_s'] / enc:.2f}% of encode time ({c.seconds:.1f} s of audio, {N_FILES} files)")

print("\n== 4. peak memory (tracemalloc) when counting 10x more files")


def peak(n_files, mode, shapes, T):
    (qo, Ko, fro), (qn, Kn, frn) = shapes
    g = np.random.default_rng(1)
    c = CooccurrenceCounter(info(qo, Ko, fro), info(qn, Kn, frn), mode=mode, fold_every=64)
    tracemalloc.start()
    for _ in range(n_files):  # codes are generated on the fly, as count_corpus encodes them
        c.update(g.integers(0, Ko, (qo, int(T * fro))), g.integers(0, Kn, (qn, int(T * frn))))
    c.counts
    p = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    return p / 2**20, c.counts.nnz


# Random codes over a large vocabulary keep filling new cells, so the counts matrix itself (not the streaming) would
# grow; the vocabularies here saturate within the first run so that what is compared is the working memory.
for mode, shapes, T, n in (("file", ((1, 1024, 75.0), (1, 1024, 75.0)), 5.6, 64),
                           ("aligned", ((8, 64, 75.0), (9, 64, FR_NEW)), 5.0, 64),
                           ("aligned", ((8, 1024, 75.0), (9, 1024, FR_NEW)), 5.0, 12)):
    (p1, z1), (p10, z10) = peak(n, mode, shapes, T), peak(10 * n, mode, shapes, T)
    V = f"{shapes[1][0]}x{shapes[1][1]} x {shapes[0][0]}x{shapes[0][1]}"
    print(f"mode={mode:7s} {V:>18s}: {n:4d} files peak {p1:7.1f} MiB (nnz {z1:9d}) | {10*n:4d} files peak {p10:7.1f} MiB "
          f"(nnz {z10:9d}) -> ratio {p10/p1:.2f}")
print("(last row: random codes over 8192 x 9216 cells never saturate, so the matrix -- not the buffers -- grows with nnz;\n"
      " it is bounded all the same: at a third full it turns into a dense array, 8 bytes a cell)")
