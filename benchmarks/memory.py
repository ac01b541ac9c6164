"""Peak memory of `count_corpus` on a corpus and on one 10 times larger: counting streams, so the peak
should not grow with the corpus (only the counts matrix grows, and it is bounded by V_new x V_old).

Each size runs in a fresh process; the peak resident set (ru_maxrss) is read after the codecs are loaded
and warmed up, and again after counting, so the difference is what counting (encoding included) added.
On CPU, PyTorch's oneDNN convolutions cache one primitive per input shape, so memory also grows with the
number of distinct file lengths; a third run caps that cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY=8) to show it.
`python benchmarks/memory.py [--files N] [--old SPEC] [--new SPEC]` (N files for 1x, 10 N for 10x).
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path


def rss_mb():
    "Peak resident set size of this process so far, in MiB (Linux reports KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Subset:
    "The first `n` items of a dataset (keeps `paths` for count_corpus' resume fingerprint)."
    def __init__(self, ds, n): self.ds, self.n, self.paths = ds, n, ds.paths[:n]
    def __len__(self): return self.n
    def __getitem__(self, i):
        if not 0 <= i < self.n: raise IndexError(i)
        return self.ds[i]


def corpus(n_files):
    "Offline corpus with at least `n_files` utterances in train-clean."
    from codecswap_nb.audio import default_corpus, LibriTTS
    spk = 4
    while True:
        ds = LibriTTS(default_corpus(n_speakers=spk, n_utterances=max(1, -(-n_files * 2 // spk))), "train-clean")
        if len(ds) >= n_files: return ds
        spk *= 2


def child(a):
    "Count the first `a.child` files; print a JSON line with the memory figures."
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    from codecswap_nb.codecs import load_codec, parse_codec_spec
    from codecswap_nb.counting import count_corpus
    ds = Subset(corpus(a.child), a.child)
    (on, okw), (nn, nkw) = parse_codec_spec(a.old), parse_codec_spec(a.new)
    old = load_codec(on, **okw, weights="random", seed=0)
    new = load_codec(nn, **nkw, weights="random", seed=0)
    u = ds[0]
    with torch.inference_mode(): old.encode(u.waveform, u.sample_rate); new.encode(u.waveform, u.sample_rate)
    before = rss_mb()
    t = time.perf_counter()
    c = count_corpus(ds, old, new, batch_size=a.batch_size, progress=False)
    dt = time.perf_counter() - t
    M = c.counts
    print(json.dumps(dict(files=c.n_files, seconds=c.seconds, before=before, after=rss_mb(), time=dt, nnz=int(M.nnz),
                          matrix_mb=(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes) / 2**20)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8, help="files of the 1x corpus (10x has ten times more)")
    ap.add_argument("--old", default="encodec_24khz:6")
    ap.add_argument("--new", default="dac_16khz")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a)
    corpus(10 * a.files)  # build once, outside the measured processes
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"{a.old} -> {a.new}, random weights, batch size {a.batch_size}")
    # oneDNN (PyTorch's CPU convolutions) caches one primitive per input shape, so on CPU memory also grows
    # with the number of distinct file lengths; the last row caps that cache to show how much it accounts for.
    runs = [("1x", 1, {}), ("10x", 10, {}), ("10x, oneDNN cache 8", 10, {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8"})]
    res = {}
    for label, k, env in runs:
        cmd = [sys.executable, __file__, "--child", str(k * a.files), "--old", a.old, "--new", a.new,
               "--batch-size", str(a.batch_size)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CODECSWAP_OFFLINE="1", **env))
        if r.returncode: sys.exit(f"child for {label} failed:\n{r.stderr[-3000:]}")
        res[label] = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"{'corpus':20s} {'files':>6s} {'audio (s)':>10s} {'RSS before':>11s} {'peak RSS':>9s} {'added':>8s} {'counts':>8s} {'time (s)':>9s}")
    for label, m in res.items():
        print(f"{label:20s} {m['files']:6d} {m['seconds']:10.1f} {m['before']:9.0f}MB {m['after']:7.0f}MB "
              f"{m['after'] - m['before']:6.0f}MB {m['matrix_mb']:6.1f}MB {m['time']:9.1f}")
    add = lambda m: max(m["after"] - m["before"], 1.0)
    one, ten, capped = res["1x"], res["10x"], res["10x, oneDNN cache 8"]
    print(f"10x corpus / 1x corpus: peak RSS x{ten['after'] / one['after']:.2f}, memory added while counting "
          f"x{add(ten) / add(one):.2f} (x{add(capped) / add(one):.2f} with the oneDNN cache capped), counts matrix "
          f"x{ten['matrix_mb'] / max(one['matrix_mb'], 1e-9):.2f}, time x{ten['time'] / one['time']:.1f}")


if __name__ == "__main__":
    main()
