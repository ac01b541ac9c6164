"""build_embeddings on a full-size vocabulary: 9x1024 new tokens (DAC 44 kHz) from 8x1024 old ones
(EnCodec 24 kHz at 6 kbps), d = 1024 -- the shape of a real codec switch.

Counts are simulated as an aligned count over `--frames` frames: every new frame meets one token of each
old level, old codes are Zipf-distributed and each new level is a noisy function of the old codes, so
the matrix has the sparsity and skew of real counts. Prints the time of each method and, as the
reference point, the write-up's dict-of-dicts loop, timed on a subset of rows and scaled (it is too slow
to run in full). Ratios only, no pass/fail: `python benchmarks/embeddings.py [--frames N] [--dim D]`.
"""
import argparse, os, platform, time
from collections import defaultdict

import numpy as np
import scipy.sparse as sp
import torch

from codecswap_nb.embeddings import build_embeddings, build_head

OLD, NEW = (8, 1024), (9, 1024)


def simulated_counts(frames, rng):
    "Aligned-style counts (V_new, V_old) from `frames` frames of correlated, Zipf-distributed codes."
    (nq_o, K_o), (nq_n, K_n) = OLD, NEW
    zipf = 1 / np.arange(1, K_o + 1) ** 1.1
    zipf /= zipf.sum()
    old = np.stack([rng.permutation(K_o)[rng.choice(K_o, frames, p=zipf)] for _ in range(nq_o)])   # [nq_o, T]
    maps = rng.integers(0, K_n, (nq_n, K_o))
    src = np.arange(nq_n) * nq_o // nq_n                      # each new level follows one old level...
    new = maps[np.arange(nq_n)[:, None], old[src]]
    noisy = rng.random(new.shape) < 0.3                        # ...with 30% of its codes replaced at random
    new[noisy] = rng.integers(0, K_n, noisy.sum())
    rows = (np.arange(nq_n)[:, None] * K_n + new)              # [nq_n, T] flat new ids
    cols = (np.arange(nq_o)[:, None] * K_o + old)              # [nq_o, T] flat old ids
    r = np.repeat(rows, nq_o, axis=0).ravel()                  # every (new level, old level) pair, every frame
    c = np.tile(cols, (nq_n, 1)).ravel()
    C = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(nq_n * K_n, nq_o * K_o)).tocsr()
    C.sum_duplicates()
    return C


def writeup_loop(C, W_old, rows):
    "The write-up's algorithm (dict of dicts, per-entry numpy adds) for the given rows."
    co = defaultdict(lambda: defaultdict(int))
    Cr = C[rows].tocoo()
    for i, j, v in zip(Cr.row, Cr.col, Cr.data): co[i][j] += v
    W = W_old.numpy()
    out = np.zeros((len(rows), W.shape[1]))
    for i, olds in co.items():
        total = sum(olds.values())
        acc = np.zeros(W.shape[1])
        for j, v in olds.items(): acc += v / total * W[j]
        out[i] = acc
    return out


def timed(f, repeat=1):
    "Best wall time of `repeat` calls and the last result."
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter(); res = f(); best = min(best, time.perf_counter() - t)
    return best, res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200_000, help="simulated frames (200k = ~1.1 h at 50 Hz)")
    ap.add_argument("--dim", type=int, default=1024, help="embedding width d")
    ap.add_argument("--loop-rows", type=int, default=256, help="rows the write-up loop is timed on")
    a = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}")
    t_c, C = timed(lambda: simulated_counts(a.frames, rng))
    W_old = torch.randn(OLD[0] * OLD[1], a.dim) * 0.02
    print(f"counts {C.shape[0]} x {C.shape[1]} (9x1024 new, 8x1024 old), nnz {C.nnz:,} "
          f"({C.nnz / C.shape[0]:.0f} per row), simulated in {t_c:.2f} s; d = {a.dim}")

    runs = [("argmax", dict(method="argmax")),
            ("weighted", dict(method="weighted")),
            ("weighted, levels=matched", dict(method="weighted", levels="matched")),
            ("weighted, ppmi, top_k=8", dict(method="weighted", ppmi=True, top_k=8)),
            ("ot (entropic, 200 iters)", dict(method="ot"))]
    times = {}
    for name, kw in runs:
        t, W = timed(lambda: build_embeddings(C, W_old, old=OLD, new=NEW, **kw), repeat=2)
        assert W.shape == (NEW[0] * NEW[1], a.dim)
        times[name] = t
    t_head, _ = timed(lambda: build_head(C, W_old, torch.zeros(W_old.shape[0]), method="weighted", old=OLD, new=NEW), repeat=2)
    times["build_head (weighted, with bias)"] = t_head

    rows = rng.choice(C.shape[0], a.loop_rows, replace=False)
    t_loop, ref = timed(lambda: writeup_loop(C, W_old, rows))
    t_loop_full = t_loop * C.shape[0] / a.loop_rows
    ours = build_embeddings(C, W_old, method="weighted", old=OLD, new=NEW, unseen="zero")[torch.as_tensor(rows)].double().numpy()
    seen = np.asarray(C[rows].sum(1)).ravel() > 0
    err = np.abs(ours[seen] - ref[seen]).max()

    print(f"\n{'method':34s} {'time (s)':>9s} {'vs write-up loop':>17s}")
    for name, t in times.items():
        print(f"{name:34s} {t:9.3f} {t_loop_full / t:16.0f}x")
    print(f"{'write-up loop (scaled from ' + str(a.loop_rows) + ' rows)':34s} {t_loop_full:9.1f} {1:16.0f}x")
    print(f"weighted == write-up loop on those rows: max abs difference {err:.2e}")


if __name__ == "__main__":
    main()
