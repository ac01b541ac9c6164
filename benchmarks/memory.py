"""Peak memory of `count_corpus` after N files and after 10 N files: counting streams, so the peak should not grow
with the number of files (only the counts matrix grows, and it is bounded: see `CooccurrenceCounter`).

One process counts 10 N files; the peak resident set (ru_maxrss) is read when the codecs are loaded and warmed up,
and again as each file is fetched, so "after k files" is exactly what a run over the first k files would show.
Every utterance is cut to `--crop` seconds: the codecs' activation memory follows the longest batch, so without
this a larger corpus would also be a corpus with a longer longest utterance.

glibc's allocator raises its mmap threshold as large blocks are freed, and the codecs' activations then reuse, and
fragment, the heap: peak RSS creeps up with the number of batches although the live memory does not. The second
run fixes the threshold (MALLOC_MMAP_THRESHOLD_=262144, read by glibc at start-up) to separate the two.
`python benchmarks/memory.py [--files N] [--old SPEC] [--new SPEC] [--crop S]`
"""
import argparse, json, os, platform, resource, subprocess, sys, time


def rss_mb():
    "Peak resident set size of this process so far, in MiB (Linux reports KiB)."
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Subset:
    "The first `n` items of a dataset cut to `crop` seconds; records the peak RSS each time an item is fetched."
    def __init__(self, ds, n, crop=None): self.ds, self.n, self.crop, self.paths, self.marks = ds, n, crop, ds.paths[:n], {}
    def __len__(self): return self.n
    def __getitem__(self, i):
        if not 0 <= i < self.n: raise IndexError(i)
        self.marks.setdefault(i, rss_mb())  # the peak after the files before `i` were encoded and counted
        u = self.ds[i]
        return u if not self.crop else u._replace(waveform=u.waveform[..., :int(self.crop * u.sample_rate)])


def corpus(n_files):
    "Offline corpus with at least `n_files` utterances in train-clean."
    from codecswap_nb.audio import LibriTTS
    from codecswap_nb.corpus import default_corpus
    spk = 4
    while True:
        ds = LibriTTS(default_corpus(n_speakers=spk, n_utterances=max(1, -(-n_files * 2 // spk))), "train-clean")
        if len(ds) >= n_files: return ds
        spk *= 2


def child(a):
    "Count the first `a.child` files; print a JSON line with the peak RSS before and after every file."
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    from codecswap_nb.codecs import load_codec, parse_codec_spec
    from codecswap_nb.counting import count_corpus
    ds = Subset(corpus(a.child), a.child, a.crop)
    (on, okw), (nn, nkw) = parse_codec_spec(a.old), parse_codec_spec(a.new)
    old = load_codec(on, **okw, weights="random", seed=0)
    new = load_codec(nn, **nkw, weights="random", seed=0)
    u = ds.ds[0]
    with torch.inference_mode(): old.encode(u.waveform, u.sample_rate); new.encode(u.waveform, u.sample_rate)
    before = rss_mb()
    t = time.perf_counter()
    c = count_corpus(ds, old, new, batch_size=a.batch_size, progress=False, cache=False)   # streams: no codes kept
    dt = time.perf_counter() - t
    M = c.counts
    marks = {k: v for k, v in ds.marks.items()}
    marks[len(ds)] = rss_mb()
    print(json.dumps(dict(files=c.n_files, seconds=c.seconds, before=before, marks=marks, time=dt, nnz=int(M.nnz),
                          matrix_mb=(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes) / 2**20)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8, help="N: the peak after N files is compared with the peak after 10 N")
    ap.add_argument("--old", default="encodec_24khz:6")
    ap.add_argument("--new", default="dac_16khz")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--crop", type=float, default=2.5, help="cut every utterance to at most this many seconds (0: keep)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return child(a)
    n = a.files
    corpus(10 * n)  # build once, outside the measured processes
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"{a.old} -> {a.new}, random weights, batch size {a.batch_size}, utterances cut to {a.crop} s")
    runs = [("glibc default", {}), ("glibc, fixed mmap threshold", {"MALLOC_MMAP_THRESHOLD_": "262144"})]
    steps = [n, 2 * n, 5 * n, 10 * n]
    print(f"{'allocator':28s} {'RSS before':>10s} " + " ".join(f"{f'after {k}':>10s}" for k in steps)
          + f" {'10N / N':>8s} {'counts':>8s} {'time (s)':>9s}")
    for label, env in runs:
        cmd = [sys.executable, __file__, "--child", str(10 * n), "--old", a.old, "--new", a.new,
               "--batch-size", str(a.batch_size), "--crop", str(a.crop)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, CODECSWAP_OFFLINE="1", **env))
        if r.returncode: sys.exit(f"child for {label} failed:\n{r.stderr[-3000:]}")
        m = json.loads(r.stdout.strip().splitlines()[-1])
        peak = {int(k): v for k, v in m["marks"].items()}
        after = [peak[k] for k in steps]
        print(f"{label:28s} {m['before']:8.0f}MB " + " ".join(f"{v:8.0f}MB" for v in after)
              + f" {after[-1] / after[0]:7.2f}x {m['matrix_mb']:6.1f}MB {m['time']:9.1f}")
    print(f"(peak RSS after k files; 'counts' is the csr matrix after {10 * n} files, which grows with new token pairs "
          f"up to its bound)")


if __name__ == "__main__":
    main()
