"""Weight loading of `codecswap_nb.codecs`: official cache locations, local checkpoints, offline errors, and the
on-disk cache of random EnCodec codebooks. These need temporary cache folders, environment variables and fresh
processes, so they live here rather than in the notebook. No network is used: downloads are either disabled
(`CODECSWAP_OFFLINE=1`) or replaced by a function that fails like an offline machine."""
import json, os, subprocess, sys, urllib.error
from pathlib import Path

import pytest
import torch

from codecswap_nb.audio import cache_dir
from codecswap_nb.corpus import corpus_speech, default_corpus
from codecswap_nb.codecs import load_codec, pretrained_location

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def speech():
    "Two seconds of a dev-clean speaker of the offline corpus, at 24 kHz."
    return corpus_speech(24000, seconds=2.0, subset="dev-clean")[0][:, :24000]


@pytest.fixture
def homes(tmp_path, monkeypatch):
    "Empty official caches: torch hub (EnCodec) under $TORCH_HOME, descript (DAC) under $HOME."
    monkeypatch.setenv("CODECSWAP_CACHE", str(cache_dir()))     # keep the package cache (corpus, random codebooks)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_official_locations(homes):
    p, url, sha = pretrained_location("encodec_48khz")
    assert p == homes / "torch" / "hub" / "checkpoints" / "encodec_48khz-7e698e3e.th"
    assert url == "https://dl.fbaipublicfiles.com/encodec/v0/encodec_48khz-7e698e3e.th" and sha == "7e698e3e"
    p, url, sha = pretrained_location("dac_44khz")
    assert p == homes / "home" / ".cache" / "descript" / "dac" / "weights_44khz_8kbps_0.0.1.pth"
    assert url == "https://github.com/descriptinc/descript-audio-codec/releases/download/0.0.1/weights.pth" and sha is None


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz", "dac_16khz", "dac_24khz", "dac_44khz"])
def test_pretrained_offline_error(homes, monkeypatch, name):
    monkeypatch.setenv("CODECSWAP_OFFLINE", "1")
    path, url, _ = pretrained_location(name)
    with pytest.raises(FileNotFoundError) as e: load_codec(name, weights="pretrained")
    msg = str(e.value)
    assert path.name in msg and url in msg and str(path.parent) in msg and "weights='random'" in msg
    assert not path.exists()


def test_download_failure_is_reported(homes, monkeypatch):
    calls = []
    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix)); raise urllib.error.URLError("Name or service not known")
    monkeypatch.delenv("CODECSWAP_OFFLINE", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="download failed: URLError"): load_codec("encodec_24khz", weights="pretrained")
    path, url, sha = pretrained_location("encodec_24khz")
    assert calls == [(url, str(path), sha)]                              # official URL, official place, sha256 prefix checked


def test_auto_falls_back_to_random(homes, monkeypatch, speech):
    monkeypatch.setenv("CODECSWAP_OFFLINE", "1")
    with pytest.warns(UserWarning, match="not cached"): c = load_codec("encodec_24khz", weights="auto")
    assert c.weights == "random"
    assert torch.equal(c.encode(speech, 24000), load_codec("encodec_24khz", weights="random").encode(speech, 24000))


@pytest.mark.parametrize("name", ["encodec_24khz", "encodec_48khz"])
def test_encodec_official_cache_roundtrip(homes, speech, name):
    "A state dict written where torch hub keeps EnCodec's checkpoint is what `weights='pretrained'` loads."
    rnd = load_codec(name, weights="random", seed=0)
    path = pretrained_location(name)[0]
    path.parent.mkdir(parents=True)
    torch.save(rnd.model.state_dict(), path)
    pre = load_codec(name, weights="pretrained")
    assert pre.weights == "pretrained" and pre.config["weights"] == "pretrained"
    assert torch.equal(pre.encode(speech, 24000), rnd.encode(speech, 24000))
    assert load_codec(name, weights="auto").weights == "pretrained"
    local = load_codec(name, weights=str(path))                          # the same file as a local checkpoint
    assert local.weights == str(path) and torch.equal(local.encode(speech, 24000), rnd.encode(speech, 24000))


def test_dac_official_cache_roundtrip(homes, speech):
    "A checkpoint in DAC's own format (`DAC.save(package=False)`) in ~/.cache/descript/dac loads with weights_only."
    rnd = load_codec("dac_16khz", n_q=4, weights="random", seed=1)
    path = pretrained_location("dac_16khz")[0]
    path.parent.mkdir(parents=True)
    rnd.model.save(str(path), package=False)
    ck = torch.load(path, weights_only=True)
    assert set(ck) == {"state_dict", "metadata"} and ck["metadata"]["kwargs"]["sample_rate"] == 16000
    x = speech[:, :8000]
    pre = load_codec("dac_16khz:4", weights="pretrained")
    assert torch.equal(pre.encode(x, 24000), rnd.encode(x, 24000))
    assert not torch.equal(load_codec("dac_16khz:4", weights="random", seed=0).encode(x, 24000), rnd.encode(x, 24000))
    plain = homes / "plain.pth"                                          # a bare state dict works too
    torch.save(rnd.model.state_dict(), plain)
    assert torch.equal(load_codec("dac_16khz:4", weights=str(plain)).encode(x, 24000), rnd.encode(x, 24000))


def test_bad_checkpoints(homes):
    rnd = load_codec("dac_16khz", weights="random")
    p16 = homes / "dac16.pth"; rnd.model.save(str(p16), package=False)
    with pytest.raises(ValueError, match="sample_rate=16000, but dac_24khz has sample_rate=24000"):
        load_codec("dac_24khz", weights=str(p16))
    pkg = homes / "dac_package.pth"; rnd.model.save(str(pkg))           # DAC's default: a torch.package
    with pytest.raises(ValueError, match="package=False"): load_codec("dac_16khz", weights=str(pkg))
    other = homes / "other.th"; torch.save({"w": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not an EnCodec state dict"): load_codec("encodec_24khz", weights=str(other))
    with pytest.raises(ValueError, match="lacks"): load_codec("dac_16khz", weights=str(other))
    with pytest.raises(FileNotFoundError, match="neither"): load_codec("encodec_24khz", weights=str(homes / "missing.th"))


_CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from codecswap_nb.codecs import load_codec, _random_state_path
from codecswap_nb.corpus import corpus_speech
x = corpus_speech(24000, seconds=1.0, subset="dev-clean")[0]
c = load_codec("encodec_24khz:24", weights="random", seed=7)
print(json.dumps(dict(cached=str(_random_state_path("encodec_24khz", 7)), codes=c.encode(x, 24000).tolist())))
"""

def _child(cache, extra_env=None):
    env = {**os.environ, "CODECSWAP_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_random_encodec_is_cached_and_reproducible(tmp_path):
    "Same seed, same codec: a cold build caches its state; a later process loads it; another cold build matches."
    corpus = default_corpus().parent.parent                              # <cache>/corpus: reuse it in both caches
    for d in ("a", "b"):
        (tmp_path / d).mkdir(); (tmp_path / d / "corpus").symlink_to(corpus, target_is_directory=True)
    cold = _child(tmp_path / "a")
    assert Path(cold["cached"]).is_file() and Path(cold["cached"]).is_relative_to(tmp_path / "a")
    warm = _child(tmp_path / "a")
    assert warm["codes"] == cold["codes"]
    other = _child(tmp_path / "b")                                        # built from scratch again: identical
    assert other["codes"] == cold["codes"]
    assert len({tuple(level) for level in cold["codes"]}) == 32 and len(set(cold["codes"][0])) > 10
