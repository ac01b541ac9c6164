#!/usr/bin/env python3
"""Render committed result files into the notebooks (and so the README): numbers are never typed by hand.

A markdown cell of any notebook in nbs/ may hold blocks

    <!-- results:NAME:PART -->
    ...generated...
    <!-- /results -->

where NAME is a folder of results/ written by an experiment (`codecswap demo --out results/NAME` or
`codecswap evaluate --out results/NAME`: results.json, curves.png) and PART is one of `run`, `diagnosis`,
`table`, `targets`, `reading`. `python tools/results.py` rewrites every block from results/NAME/results.json and
copies curves.png to nbs/images/NAME_curves.png; `--check` exits 1 when a block or image is out of date.
"""
import json, re, shutil, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))
BLOCK = re.compile(r"(<!-- results:([\w.-]+):(\w+) -->\n)(.*?)(<!-- /results -->)", re.S)


def _load(name):
    f = root / "results" / name / "results.json"
    if not f.is_file(): sys.exit(f"{f} is missing: run the experiment with --out results/{name} (see nbs/index.ipynb), then this script")
    r = json.loads(f.read_text())
    if r["info"].get("partial"): sys.exit(f"{f} is a partial run (killed before its last row): rerun it to completion (it resumes)")
    return r


def run_part(r, name):
    i = r["info"]
    o, n = i["old_codec"], i["new_codec"]
    lvl = lambda c: f"{c['n_q']} levels × {c['codebook_size']} codes at {c['frame_rate']:g} frames/s, {c['sample_rate'] // 1000} kHz"
    n_utt = " / ".join(f"{v} {k}" for k, v in i["n_utterances"].items())
    sec = " / ".join(f"{v / 60:.1f}" for v in i["seconds_of_audio"].values())
    return (f"Pair: **{o['name']}** ({lvl(o)}) → **{n['name']}** ({lvl(n)}). Corpus: {n_utt} utterances "
            f"({sec} minutes of audio), speakers and sentences disjoint between splits. LM: {i['lm']['n_layers']} layers, "
            f"d_model {i['lm']['d_model']}; seed {i['seed']}. The run took {i['seconds'] / 60:.1f} minutes of wall time with "
            f"{i['torch_threads']} torch threads (results/{name}/).")


def diagnosis_part(r, name):
    d = r["info"]["diagnosis"]
    S = d["shared"]
    head = "| new level \\ old level | " + " | ".join(f"L{j}" for j in range(len(S[0]))) + " | new unigram |"
    lines = [head, "|" + "---|" * (len(S[0]) + 2)]
    lines += [f"| L{l} | " + " | ".join(f"{v:.2f}" for v in row) + f" | {d['new_unigram'][l]:.2f} |" for l, row in enumerate(S)]
    scan = d.get("scan") or []
    best = max(range(len(scan)), key=scan.__getitem__) if scan else None
    lag = "" if best is None else (f" Lag scan at level 0: best {d['lags'][best] * 1000:+.0f} ms ({scan[best]:.2f} bits), "
                                   f"{scan[0]:.2f} at {d['lags'][0] * 1000:+.0f} ms, {scan[-1]:.2f} at {d['lags'][-1] * 1000:+.0f} ms.")
    return ("Held-out bits per new token saved by knowing the time-aligned old token (smoothed models fitted on the "
            "training split; 0 = nothing shared):\n\n" + "\n".join(lines) + "\n\n" + lag.strip())


def table_part(r, name):
    from codecswap_nb.evaluate import results_table
    return results_table(r["rows"], r["info"]).strip() + f"\n\n![Test bits per second while training each initialisation](images/{name}_curves.png)"


def targets_part(r, name):
    from codecswap_nb.evaluate import targets_table
    return targets_table(r["targets"]).strip()


def reading_part(r, name):
    ts, rows = r["targets"], {x["method"]: x for x in r["rows"]}
    met = [t["target"] for t in ts if t["met"] is True]
    missed = [t["target"] for t in ts if t["met"] is False]
    unk = [t["target"] for t in ts if t["met"] is None]
    out = [f"Targets met: {len(met)} of {len(ts)}" + (f"; missed: {'; '.join(missed)}" if missed else "")
           + (f"; not checkable: {'; '.join(unk)}" if unk else "") + "."]
    from codecswap_nb.embeddings import parse_init
    transfers = [x for m, x in rows.items() if m != "scratch" and parse_init(m).counts is not None and parse_init(m).options.rows == "counts"]
    if transfers:
        b = min(transfers, key=lambda x: x["step0_bits_per_second"])
        u, s, rnd = rows.get("unigram"), rows["scratch"], rows.get("random")
        out.append(f"Lowest step 0 of the counts-based rows: `{b['method']}`, {b['step0_bits_per_second']:.0f} bits/s against "
                   + (f"{rnd['step0_bits_per_second']:.0f} for `random`, " if rnd else "")
                   + (f"{u['step0_bits_per_second']:.0f} for `unigram` (frequencies only) " if u else "")
                   + f"and {s['step0_bits_per_second']:.0f} for scratch; final {b['final_bits_per_second']:.0f} against "
                   + (f"{u['final_bits_per_second']:.0f} (`unigram`) and " if u else "") + f"{s['final_bits_per_second']:.0f} (scratch).")
        sc = {c["step"]: c["bits_per_second"] for c in s["curve"]}
        below = [c["step"] for c in b["curve"] if c["step"] in sc and c["bits_per_second"] < sc[c["step"]]]
        out.append(f"`{b['method']}` is below scratch at step{'s' if len(below) != 1 else ''} {', '.join(map(str, below)) or 'none'} "
                   f"of {', '.join(str(c['step']) for c in s['curve'])}.")
    return " ".join(out)


PARTS = dict(run=run_part, diagnosis=diagnosis_part, table=table_part, targets=targets_part, reading=reading_part)


def render(check=False):
    stale, cache = [], {}
    for nb_path in sorted((root / "nbs").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        changed = False
        for c in nb["cells"]:
            if c["cell_type"] != "markdown": continue
            src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
            def sub(m):
                name, part = m.group(2), m.group(3)
                if part not in PARTS: sys.exit(f"{nb_path.name}: unknown results part {part!r} (known: {', '.join(PARTS)})")
                if name not in cache: cache[name] = _load(name)
                return m.group(1) + PARTS[part](cache[name], name).strip() + "\n" + m.group(5)
            new = BLOCK.sub(sub, src)
            if new != src: c["source"], changed = new, True
        if changed:
            stale.append(nb_path.name)
            if not check: nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    for name in cache:
        src, dst = root / "results" / name / "curves.png", root / "nbs" / "images" / f"{name}_curves.png"
        if src.is_file() and (not dst.is_file() or dst.read_bytes() != src.read_bytes()):
            stale.append(str(dst.relative_to(root)))
            if not check: dst.parent.mkdir(exist_ok=True); shutil.copyfile(src, dst)
    return stale


if __name__ == "__main__":
    check = "--check" in sys.argv
    stale = render(check)
    if check and stale: sys.exit(f"out of date with results/: {', '.join(stale)}: run `make results` (python tools/results.py) and commit")
    print(("rendered: " + ", ".join(stale)) if stale and not check else "results blocks in sync with results/")
