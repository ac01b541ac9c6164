"""Bad input anywhere in the package gives a clear error that names the problem, and no half-written file.

Table-driven: every row is a small function that makes one mistake a user can make (wrong sample-rate type,
NaN audio, a corrupt file, counts from other codecs, a pickled checkpoint, ...), the exception it must raise
and words its message must contain. Rows that write a file name it (`out=`): after the error neither that
file nor any temporary file may exist. Command-line rows run `codecswap` in-process and must exit 1 with a
one-line message.
"""
import contextlib, io, json, pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from codecswap_nb.audio import as_waveform, save_audio, load_audio, LibriTTS, AudioFolder
from codecswap_nb.cli import main
from codecswap_nb.counting import CooccurrenceCounter, count_corpus

CASES = []


def case(exc, *needles, out=None):
    "Register the decorated function as a table row: it must raise `exc` mentioning every needle."
    def deco(f):
        CASES.append(pytest.param(f, exc, needles, out, id=f.__name__.replace("_", " ").strip()))
        return f
    return deco


class CLIFailed(Exception):
    "`codecswap` exited with a non-zero status (the message is its stderr)."


def cli(*args):
    "Run `codecswap` in-process; raise CLIFailed(stderr) unless it succeeds. Failures must be status 1, one line."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        st = main([str(a) for a in args] + ["--quiet"])
    if st != 0:
        lines = err.getvalue().strip().splitlines()
        assert st == 1 and len(lines) == 1 and "Traceback" not in err.getvalue(), (st, err.getvalue())
        raise CLIFailed(lines[0])


# ---- shared small inputs ---------------------------------------------------------------------------------
OLD_CFG = dict(name="toy_old", n_q=2, codebook_size=16, sample_rate=16000, frame_rate=50.0)
NEW_CFG = dict(name="toy_new", n_q=3, codebook_size=16, sample_rate=16000, frame_rate=75.0)


def counter(old=OLD_CFG, new=NEW_CFG, files=3, seed=0):
    "A small aligned counter of random codes of codecs `old` and `new` (codec dicts)."
    rng = np.random.default_rng(seed)
    c = CooccurrenceCounter(old, new)
    for _ in range(files):
        c.update(rng.integers(0, old["codebook_size"], (old["n_q"], 50)), rng.integers(0, new["codebook_size"], (new["n_q"], 75)))
    return c


def reference_lm(t, cfg=OLD_CFG):
    "A tiny reference LM checkpoint trained (well, initialised) for codec `cfg`, saved in `t/lm`."
    from codecswap_nb.audiolm import AudioLM, LMConfig, save_checkpoint
    m = AudioLM(LMConfig(n_q=cfg["n_q"], codebook_size=cfg["codebook_size"], d_model=8, n_heads=2, n_layers=1,
                         max_len=32, codec=cfg))
    return save_checkpoint(m, t / "lm")


@pytest.fixture(scope="module")
def codec():
    "A small codec with random weights (DAC 16 kHz, 2 levels)."
    from codecswap_nb.codecs import load_codec
    return load_codec("dac_16khz", n_q=2, weights="random", seed=0)


# ---- audio -----------------------------------------------------------------------------------------------
@case(TypeError, "sr", "int")
def sample_rate_given_as_a_string(t): as_waveform(np.zeros(100), "24000")

@case(ValueError, "sr", "positive")
def negative_sample_rate(t): as_waveform(np.zeros(100), -16000)

@case(ValueError, "empty")
def empty_audio(t): as_waveform(np.zeros(0), 16000)

@case(ValueError, "nan")
def nan_in_audio(t): as_waveform(np.array([0.0, np.nan, 0.1]), 16000)

@case(ValueError, "inf")
def inf_in_audio(t): as_waveform(np.array([0.0, np.inf, 0.1]), 16000)

@case(ValueError, "1-D", "2-D")
def audio_with_three_axes(t): as_waveform(np.zeros((1, 2, 100)), 16000)

@case(ValueError, "more channels than samples", ".T")
def stereo_given_as_samples_by_channels(t): as_waveform(np.zeros((48000, 2)), 48000)

@case(ValueError, "nan", out="x.wav")
def saving_nan_audio(t): save_audio(t / "x.wav", torch.tensor([0.0, float("nan")] * 100), 16000)

@case(ValueError, ".xyz", out="x.xyz")
def saving_to_an_unknown_format(t): save_audio(t / "x.xyz", torch.zeros(1600), 16000)

@case(ValueError, "can't decode", "bad.wav")
def corrupt_audio_file(t):
    (t / "bad.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    load_audio(t / "bad.wav")

@case(FileNotFoundError, "missing.wav")
def missing_audio_file(t): load_audio(t / "missing.wav")

@case(FileNotFoundError, "train-other-500", "folders found")
def missing_libritts_subset(t):
    save_audio(t / "LibriTTS" / "dev-clean" / "1" / "2" / "1_2_3_4.wav", torch.zeros(1600), 16000)
    LibriTTS(t, "train-other-500")

@case(FileNotFoundError, "no files match", ".flac")
def audio_folder_without_matching_files(t):
    save_audio(t / "a.flac", torch.zeros(1600), 16000)
    AudioFolder(t, "**/*.wav")


# ---- codecs ----------------------------------------------------------------------------------------------
@case(ValueError, "nosuchcodec")
def unknown_codec(t):
    from codecswap_nb.codecs import load_codec
    load_codec("nosuchcodec")

@case(ValueError, "bandwidth", "7")
def bandwidth_the_codec_does_not_have(t):
    from codecswap_nb.codecs import load_codec
    load_codec("encodec_24khz", bandwidth=7.0, weights="random")

@case(ValueError, "abc")
def malformed_codec_spec(t):
    from codecswap_nb.codecs import parse_codec_spec
    parse_codec_spec("dac_24khz:abc")

@case(ValueError, "shorter than one")
def audio_shorter_than_one_frame(t, codec): codec.encode(np.zeros(10, dtype=np.float32), 16000)

@case(ValueError, "outside the codebook")
def decoding_codes_out_of_range(t, codec): codec.decode(torch.full((2, 5), 5000))

@case(ValueError, "levels", "n_q=2")
def decoding_codes_with_the_wrong_n_q(t, codec): codec.decode(torch.zeros((4, 5), dtype=torch.long))

@case(FileNotFoundError, "pretrained weights", "weights='random'")
def pretrained_weights_missing_offline(t, monkeypatch):
    from codecswap_nb.codecs import load_codec
    monkeypatch.setenv("CODECSWAP_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(t)); monkeypatch.setenv("TORCH_HOME", str(t / "torch"))
    load_codec("dac_16khz", weights="pretrained")

@case(FileNotFoundError, "nope.pth")
def codec_weights_file_missing(t):
    from codecswap_nb.codecs import load_codec
    load_codec("dac_16khz", weights=str(t / "nope.pth"))

class _Evil:
    "Unpickling this calls a function (here a harmless print): weights-only loading must refuse it."
    def __reduce__(self): return (print, ("pickle code ran",))

@case(ValueError, "weights only")
def codec_weights_file_with_pickled_code(t):
    from codecswap_nb.codecs import load_codec
    torch.save({"state_dict": _Evil()}, t / "evil.pth")
    load_codec("dac_16khz", weights=str(t / "evil.pth"))


# ---- counting --------------------------------------------------------------------------------------------
@case(ValueError, "outside the codebook")
def counting_codes_out_of_range(t): counter().update(np.full((2, 5), 99), np.zeros((3, 5), dtype=int))

@case(ValueError, "levels", "n_q=3")
def counting_codes_with_the_wrong_n_q(t): counter().update(np.zeros((2, 5), dtype=int), np.zeros((2, 5), dtype=int))

@case(ValueError, "corrupted", "counts.npz")
def truncated_counts_file(t):
    p = counter().save(t / "counts.npz")
    p.write_bytes(p.read_bytes()[:200])
    CooccurrenceCounter.load(p)

@case(ValueError, "pickled.npz")
def pickled_npz(t):
    np.savez(t / "pickled.npz", header=np.array([{"format": "x"}], dtype=object), data=np.zeros(1))
    CooccurrenceCounter.load(t / "pickled.npz")

@case(ValueError, "different configuration")
def adding_counts_of_other_codecs(t): counter() + counter(old=dict(OLD_CFG, name="other", n_q=4))

@case(ValueError, "does not belong to this run")
def resuming_from_a_checkpoint_of_other_codecs(t):
    from codecswap_nb.codecs import ToyCodec
    rng = np.random.default_rng(0)
    ds = [(torch.from_numpy(0.1 * rng.standard_normal((1, 8000)).astype(np.float32)), 16000) for _ in range(3)]
    count_corpus(ds, ToyCodec(n_q=2), ToyCodec(n_q=3, frame_rate=75.0), checkpoint=t / "ck.npz", progress=False, cache=False)
    count_corpus(ds, ToyCodec(n_q=2), ToyCodec(n_q=4, frame_rate=75.0), checkpoint=t / "ck.npz", progress=False, cache=False)


# ---- embeddings and transfer -----------------------------------------------------------------------------
@case(ValueError, "32")
def old_embeddings_with_the_wrong_vocabulary(t):
    from codecswap_nb.embeddings import build_embeddings
    build_embeddings(counter(), torch.zeros(30, 4))

@case(ValueError, "nosuchmethod")
def unknown_embedding_method(t):
    from codecswap_nb.embeddings import build_embeddings
    build_embeddings(counter(), torch.zeros(32, 4), method="nosuchmethod")

@case(ValueError, "different old codec")
def transferring_with_counts_of_another_codec(t):
    from codecswap_nb.audiolm import load_checkpoint
    from codecswap_nb.transfer import TokenLayout, transfer_model
    m = load_checkpoint(reference_lm(t))
    lay = TokenLayout.per_codebook(n_q=2, codebook_size=16, n_special=2, codec=OLD_CFG)
    transfer_model(m, counter(old=dict(OLD_CFG, name="encodec_24khz")), lay, NEW_CFG)

@case(ValueError, "noise_mode='white'", "allowed: 'fresh', 'posterior', 'matched'")
def an_option_value_it_cannot_take(t):
    from codecswap_nb.embeddings import build_embeddings
    build_embeddings(counter(), torch.zeros(32, 4), noise=1.0, noise_mode="white")

@case(ValueError, "unknown flag 'sharp'", "KEY=VALUE")
def an_init_name_with_an_unknown_flag(t):
    from codecswap_nb.embeddings import parse_init
    parse_init("aligned+weighted+sharp")

@case(ValueError, "aligned+weighted reads counts")
def an_init_that_reads_counts_without_counts(t):
    from codecswap_nb.audiolm import load_checkpoint
    from codecswap_nb.transfer import TokenLayout, transfer_model
    lay = TokenLayout.per_codebook(n_q=2, codebook_size=16, n_special=2, codec=OLD_CFG)
    transfer_model(load_checkpoint(reference_lm(t)), None, lay, NEW_CFG, "aligned+weighted")

@case(FileNotFoundError, "config.json")
def loading_a_checkpoint_folder_without_config(t):
    from codecswap_nb.audiolm import load_checkpoint
    (t / "ck").mkdir(); load_checkpoint(t / "ck")


# ---- the command line ------------------------------------------------------------------------------------
@case(CLIFailed, "different old codec", out="new_lm")
def cli_transfer_with_counts_of_another_codec(t):
    counter(old=dict(OLD_CFG, name="encodec_24khz")).save(t / "c.npz")
    cli("transfer", "--checkpoint", reference_lm(t), "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIFailed, "embs.2", out="new.pt")
def cli_transfer_checkpoint_of_another_layout(t):
    counter().save(t / "c.npz")
    torch.save({f"embs.{l}.weight": torch.randn(18, 4) for l in range(3)}, t / "old.pt")   # 3 tables, not 2
    (t / "layout.json").write_text(json.dumps(dict(kind="per_codebook", embeddings="embs", heads=None, n_q=2,
                                                   codebook_size=16, n_special=2, codec=OLD_CFG)))
    cli("transfer", "--checkpoint", t / "old.pt", "--layout", t / "layout.json", "--counts", t / "c.npz", "--out", t / "new.pt")

@case(CLIFailed, "weights_only", out="new.pt")
def cli_transfer_of_a_pickled_checkpoint(t):
    counter().save(t / "c.npz")
    torch.save({"embs.0.weight": torch.zeros(18, 4), "extra": _Evil()}, t / "old.pt")
    (t / "layout.json").write_text(json.dumps(dict(kind="per_codebook", n_q=2, codebook_size=16, embeddings="embs", heads=None)))
    cli("transfer", "--checkpoint", t / "old.pt", "--layout", t / "layout.json", "--counts", t / "c.npz", "--out", t / "new.pt")

@case(CLIFailed, "not valid JSON", out="new.pt")
def cli_transfer_with_a_broken_layout_spec(t):
    counter().save(t / "c.npz")
    torch.save({"embs.0.weight": torch.zeros(18, 4)}, t / "old.pt")
    (t / "layout.json").write_text("{kind: per_codebook")
    cli("transfer", "--checkpoint", t / "old.pt", "--layout", t / "layout.json", "--counts", t / "c.npz", "--out", t / "new.pt")

@case(CLIFailed, "pickled.npz")
def cli_inspect_of_a_pickled_npz(t):
    np.savez(t / "pickled.npz", header=np.array([{"format": "x"}], dtype=object))
    cli("inspect", t / "pickled.npz")

@case(CLIFailed, "no subset", "train-other-500", out="c.npz")
def cli_count_with_a_missing_subset(t):
    save_audio(t / "LibriTTS" / "dev-clean" / "1" / "2" / "1_2_3_4.wav", torch.zeros(1600), 16000)
    cli("count", "--old", "dac_16khz:1", "--new", "dac_16khz:2", "--weights", "random", "--data", t,
        "--subset", "train-other-500", "--out", t / "c.npz")

@case(CLIFailed, "interrupted run", "--resume", out="c.npz")
def cli_count_over_a_stale_checkpoint_without_resume(t):
    counter().save(t / "c.partial.npz")
    cli("count", "--old", "dac_16khz:1", "--new", "dac_16khz:2", "--weights", "random", "--data", t, "--out", t / "c.npz")


# ---- the test --------------------------------------------------------------------------------------------
def _leftovers(root):
    "Temporary files that an atomic write would have left behind."
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_enough_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("make,exc,needles,out", CASES)
def test_bad_input(make, exc, needles, out, tmp_path, request, monkeypatch):
    kw = {}
    if "codec" in make.__code__.co_varnames[:make.__code__.co_argcount]: kw["codec"] = request.getfixturevalue("codec")
    if "monkeypatch" in make.__code__.co_varnames[:make.__code__.co_argcount]: kw["monkeypatch"] = monkeypatch
    with pytest.raises(exc) as e:
        make(tmp_path, **kw)
    msg = str(e.value)
    assert msg.strip(), "the error has no message"
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in the message: {msg}"
    if out is not None:
        assert not (tmp_path / out).exists(), f"{out} was left behind after the error"
    assert not _leftovers(tmp_path), _leftovers(tmp_path)


# ---- nothing unpickles untrusted files -------------------------------------------------------------------
def _unsafe_loads(src, fname):
    "Calls in `src` that could unpickle: torch.load without weights_only=True, np.load with allow_pickle, pickle."
    import ast
    bad = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Call): continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        const = lambda k: isinstance(kw.get(k), ast.Constant) and kw[k].value
        where = f"{fname}:{node.lineno}"
        if owner == "torch" and name == "load" and const("weights_only") is not True:
            bad.append(f"{where} torch.load without weights_only=True")
        if name == "load_state_dict_from_url" and const("weights_only") is not True:
            bad.append(f"{where} load_state_dict_from_url without weights_only=True")
        if owner in ("np", "numpy") and name == "load" and ("allow_pickle" not in kw or const("allow_pickle") is not False):
            bad.append(f"{where} np.load without allow_pickle=False")
        if owner in ("pickle", "cPickle", "dill", "joblib") and name in ("load", "loads"):
            bad.append(f"{where} {owner}.{name}")
    return bad


def test_audit_catches_unsafe_loads():
    src = "import torch, numpy as np\ntorch.load(p)\nnp.load(p)\ntorch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\n"
    assert len(_unsafe_loads(src, "x.py")) == 2


def test_package_never_unpickles():
    import codecswap_nb
    pkg = Path(codecswap_nb.__file__).parent
    bad = [b for f in sorted(pkg.glob("*.py")) for b in _unsafe_loads(f.read_text(), f.name)]
    assert not bad, "unsafe loads in the package: " + "; ".join(bad)
