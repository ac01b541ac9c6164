"Tests of codecswap_nb.audio and codecswap_nb.corpus that need more than a notebook cell: processes, torchaudio parity."
import subprocess
import sys
import time

import pytest
import torch

from codecswap_nb.audio import LibriTTS, load_audio, save_audio
from codecswap_nb.corpus import make_corpus


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("ref"), n_speakers=3, n_utterances=3, seed=7)
    # speakers whose ids are prefixes of each other: folder order and file-name order differ
    for spk, chap in (("103", "1241"), ("1034", "121119")):
        utt = root / "odd-subset" / spk / chap / f"{spk}_{chap}_000001_000000"
        save_audio(utt.with_suffix(".wav"), torch.linspace(-0.5, 0.5, 480), 24000)
        utt.with_suffix(".original.txt").write_text(f"Speaker {spk}.")
        utt.with_suffix(".normalized.txt").write_text(f"Speaker {spk}.")
    return root


def test_concurrent_builds_agree(tmp_path, corpus):
    "Three fresh processes building one corpus at once leave exactly the files of an in-process build."
    code = f"from codecswap_nb.corpus import make_corpus; make_corpus({str(tmp_path)!r}, n_speakers=3, n_utterances=3, seed=7)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
    errs = [p.communicate()[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    built = {k: v for k, v in _files(corpus).items() if k.parts[0] != "odd-subset"}
    assert _files(tmp_path / "LibriTTS") == built  # no temp files, no torn files, same bytes


def test_matches_torchaudio_libritts(corpus, monkeypatch):
    "Our items equal torchaudio.datasets.LIBRITTS's on the same folder (its loader swapped for soundfile)."
    ta_libritts = pytest.importorskip("torchaudio.datasets.libritts")
    monkeypatch.setattr(ta_libritts.torchaudio, "load", lambda p: load_audio(p, mono=False))
    for subset in ("train-clean", "dev-clean", "odd-subset"):
        ours, theirs = LibriTTS(corpus, subset), ta_libritts.LIBRITTS(corpus.parent, url=subset)
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            assert torch.equal(a[0], b[0]) and tuple(a[1:]) == tuple(b[1:])


def test_killed_build_leaves_whole_files_and_resumes(tmp_path, corpus):
    "SIGKILL in the middle of a build: every file present is complete, and a re-run completes the corpus."
    code = f"from codecswap_nb.corpus import make_corpus; make_corpus({str(tmp_path)!r}, n_speakers=3, n_utterances=3, seed=7)"
    p = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    while p.poll() is None and not list(tmp_path.rglob("*.wav")) and time.monotonic() < deadline: time.sleep(0.005)
    p.kill(); p.wait()
    ref = {k: v for k, v in _files(corpus).items() if k.parts[0] != "odd-subset"}
    partial = _files(tmp_path / "LibriTTS") if (tmp_path / "LibriTTS").exists() else {}
    for k, v in partial.items():  # whole files, identical to the reference, or hidden temp files
        assert ref.get(k) == v or (k.name.startswith(".") and k.name.endswith(".tmp")), k
    make_corpus(tmp_path, n_speakers=3, n_utterances=3, seed=7)
    done = {k: v for k, v in _files(tmp_path / "LibriTTS").items() if not k.name.endswith(".tmp")}
    assert done == ref
