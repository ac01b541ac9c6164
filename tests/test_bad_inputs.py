"""Bad input anywhere in the package gives a clear error that names the problem, and no half-written file.

Table-driven: every row is a small function that makes one mistake a user can make (wrong sample-rate type,
NaN audio, a corrupt file, counts from other codecs, a pickled checkpoint, ...), the exception it must raise
and words its message must contain. Rows that write a file name it (`out=`): after the error neither that
file nor any temporary file may exist. Files a row saved before its mistake are registered with `keep(...)`:
after the error each must still be there, byte for byte. Command-line rows run `codecswap` in-process and must
exit 1 (`CLIFailed`: the work failed) or 2 (`CLIUsage`: a bad command line) with a one-line message. Rows about
file permissions run `codecswap` in a child process without the capabilities that let root ignore permissions
(`unprivileged_cli`), and are skipped, saying why, where that is impossible.
"""
import contextlib, ctypes, hashlib, io, json, os, pickle, subprocess, sys, zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codecswap_nb.audio import as_waveform, save_audio, load_audio, LibriTTS, AudioFolder
from codecswap_nb.cli import main
from codecswap_nb.counting import CooccurrenceCounter, count_corpus

CASES = []


def case(exc, *needles, out=None, absent=()):
    "Register the decorated function as a table row: it must raise `exc` mentioning every needle and none of `absent`."
    def deco(f):
        CASES.append(pytest.param(f, exc, needles, out, absent, id=f.__name__.replace("_", " ").strip()))
        return f
    return deco


KEPT = {}


def keep(path):
    "Register a file saved before the mistake: the test checks it survives the error unchanged. Returns `path`."
    path = Path(path)
    KEPT[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return path


class CLIFailed(Exception):
    "`codecswap` exited with status 1: the work failed (the message is its error line)."


class CLIUsage(Exception):
    "`codecswap` exited with status 2: a bad command line (the message is its error line)."


def _raise_cli(st, err):
    "Raise CLIFailed/CLIUsage for a non-zero status; the error must be a single line, without a traceback."
    if st == 0: return
    errors = [l for l in err.strip().splitlines() if "error:" in l]
    assert st in (1, 2) and len(errors) == 1 and "Traceback" not in err, (st, err)
    if st == 1: assert len(err.strip().splitlines()) == 1, err
    raise (CLIFailed if st == 1 else CLIUsage)(errors[0])


def cli(*args):
    "Run `codecswap` in-process; raise CLIFailed/CLIUsage(error line) unless it succeeds."
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        st = main([str(a) for a in args] + ["--quiet"])
    _raise_cli(st, err.getvalue())


def _without_dac_override():
    "preexec_fn: drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the bounding set, so that the exec'd child,"
    " even as root, is held to file permissions (a no-op without root)."
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3): libc.prctl(24, cap, 0, 0, 0)   # PR_CAPBSET_DROP


_CHILD = """
import sys
try: open(sys.argv[1]).close(); sys.exit(77)      # the probe is unreadable to anyone held to permissions
except PermissionError: pass
from codecswap_nb.cli import main
sys.exit(main(sys.argv[2:]))
"""


def unprivileged_cli(t, *args):
    "Run `codecswap` in a child process held to file permissions (as root: without the capabilities that bypass them)."
    probe = t / ".probe"; probe.write_text("x"); probe.chmod(0)
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD, str(probe), *map(str, args), "--quiet"], capture_output=True, text=True,
                           preexec_fn=_without_dac_override, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    finally: probe.unlink()
    if r.returncode == 77:
        pytest.skip("cannot run a child process that is held to file permissions here (root without CAP_SETPCAP?)")
    _raise_cli(r.returncode, r.stderr)


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


# ---- issue 14: ways to lose or mix results -----------------------------------------------------------
def wavs(t, n=3, name="wavs", seed=0, seconds=0.3):
    "A folder of `n` short different tones (16 kHz WAV files, same names for any seed)."
    rng = np.random.default_rng(seed)
    x = np.arange(int(16000 * seconds)) / 16000
    for i in range(n):
        save_audio(t / name / f"utt{i}.wav", (0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * x)).astype(np.float32), 16000)
    return t / name


COUNT = ["count", "--old", "dac_16khz:1", "--new", "dac_16khz:2", "--weights", "random", "--no-cache", "--every", "1"]


def toys():
    "Two fast deterministic codecs for count_corpus rows."
    from codecswap_nb.codecs import ToyCodec
    return ToyCodec(50.0, 2, 16, 16000, "old"), ToyCodec(75.0, 3, 16, 16000, "new")


# 1. --checkpoint is --out: the final write would delete the result
@case(CLIUsage, "--checkpoint", "is the --out file")
def cli_count_checkpoint_is_the_out_file(t):
    keep(counter().save(t / "c.npz"))
    cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--checkpoint", t / "c.npz")

@case(CLIUsage, "is the --out file")
def cli_count_checkpoint_is_the_out_file_by_another_path(t):
    keep(counter().save(t / "c.npz"))
    cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--checkpoint", t / "sub" / ".." / "c.npz")

@case(CLIUsage, "is the --out file")
def cli_count_checkpoint_is_a_symlink_to_the_out_file(t):
    keep(counter().save(t / "c.npz")); (t / "link.npz").symlink_to(t / "c.npz")
    cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--checkpoint", t / "link.npz")


# 2. --resume over another corpus with the same names, or over a file rewritten in place
@case(ValueError, "does not belong to this run", "fingerprint")
def resuming_over_another_corpus_with_the_same_names(t):
    ck = t / "ck.npz"
    count_corpus(AudioFolder(wavs(t, name="a", seed=0)), *toys(), checkpoint=ck, progress=False, cache=False)
    keep(ck)
    count_corpus(AudioFolder(wavs(t, name="b", seed=1)), *toys(), checkpoint=ck, progress=False, cache=False)

@case(ValueError, "does not belong to this run", "fingerprint")
def resuming_over_a_file_rewritten_in_place_with_its_mtime_restored(t):
    import os
    ck, folder = t / "ck.npz", wavs(t)
    count_corpus(AudioFolder(folder), *toys(), checkpoint=ck, progress=False, cache=False)
    keep(ck)
    st = (folder / "utt1.wav").stat()
    wavs(t, seed=5)                                    # other audio, same names and sizes
    os.utime(folder / "utt1.wav", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (folder / "utt1.wav").stat().st_size == st.st_size
    count_corpus(AudioFolder(folder), *toys(), checkpoint=ck, progress=False, cache=False)

@case(CLIFailed, "does not belong to this run", "fingerprint", out="c.npz")
def cli_resume_over_another_corpus_with_the_same_names(t):
    from codecswap_nb.codecs import load_codec
    old, new = (load_codec(s, weights="random") for s in ("dac_16khz:1", "dac_16khz:2"))
    count_corpus(AudioFolder(wavs(t, name="a", seed=0)), old, new, checkpoint=t / "c.partial.npz", every=1, progress=False, cache=False)
    keep(t / "c.partial.npz")
    cli(*COUNT, "--data", wavs(t, name="b", seed=1), "--out", t / "c.npz", "--resume")


# 3. transfer: the counts' codecs are the model's (rates, weights), and the counts are complete
@case(CLIFailed, "different old codec", "weights_id", "--allow-codec-mismatch", out="new_lm")
def cli_transfer_counts_of_random_weights_to_a_model_of_pretrained_tokens(t):
    keep(counter(old=dict(OLD_CFG, weights="random", weights_id="seed0")).save(t / "c.npz"))
    cli("transfer", "--checkpoint", reference_lm(t, dict(OLD_CFG, weights="pretrained", weights_id="sha256:ab")),
        "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIFailed, "different old codec", "frame_rate 25.0 != 50.0", out="new_lm")
def cli_transfer_counts_whose_old_codec_has_another_frame_rate(t):
    counter(old=dict(OLD_CFG, frame_rate=25.0)).save(t / "c.npz")
    cli("transfer", "--checkpoint", reference_lm(t), "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIFailed, "different old codec", "sample_rate 24000 != 16000", out="new_lm")
def cli_transfer_counts_whose_old_codec_has_another_sample_rate(t):
    counter(old=dict(OLD_CFG, sample_rate=24000)).save(t / "c.npz")
    cli("transfer", "--checkpoint", reference_lm(t), "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIFailed, "incomplete", "--resume", "--allow-incomplete", out="new_lm")
def cli_transfer_of_an_incomplete_partial_checkpoint(t):
    c = counter(); c.meta["corpus"] = dict(n_items=10, done=3, complete=False)
    keep(c.save(t / "c.partial.npz"))
    cli("transfer", "--checkpoint", reference_lm(t), "--counts", t / "c.partial.npz", "--out", t / "new_lm")

@case(ValueError, "different new codec", "weights_id")
def transferring_to_a_new_codec_with_other_weights_than_counted(t):
    from codecswap_nb.audiolm import load_checkpoint
    from codecswap_nb.transfer import TokenLayout, transfer_model
    m = load_checkpoint(reference_lm(t))
    lay = TokenLayout.per_codebook(n_q=2, codebook_size=16, n_special=2, codec=OLD_CFG)
    transfer_model(m, counter(new=dict(NEW_CFG, weights="random", weights_id="seed0")), lay,
                   dict(NEW_CFG, weights="random", weights_id="seed1"))


# 4. bad files: named by path (never `wavs[i]`), refused by load_audio, skippable with --skip-bad
def _folder_with(t, bad_name, write):
    folder = wavs(t, 4)
    write(folder / bad_name)
    return folder

@case(ValueError, "empty.wav is empty")
def loading_an_empty_audio_file(t):
    sf.write(t / "empty.wav", np.zeros(0, np.float32), 16000); load_audio(t / "empty.wav")

@case(ValueError, "nan.wav contains NaN")
def loading_an_audio_file_with_nan(t):
    sf.write(t / "nan.wav", np.full(400, np.nan, np.float32), 16000, subtype="FLOAT"); load_audio(t / "nan.wav")

@case(ValueError, "huge.wav has samples up to 3e+38", "far outside [-1, 1]")
def loading_an_audio_file_with_absurd_samples(t):
    sf.write(t / "huge.wav", np.full(400, 3e38, np.float32), 16000, subtype="FLOAT"); load_audio(t / "huge.wav")

@case(ValueError, "far outside [-1, 1]")
def encoding_absurd_samples_in_memory(t, codec): codec.encode(np.full(1600, 3e38, np.float32), 16000)

@case(ValueError, "NaN or infinite latents")
def encoding_with_a_codec_whose_weights_are_nan(t):
    from codecswap_nb.codecs import load_codec
    c = load_codec("dac_16khz", n_q=2, weights="random")
    with torch.no_grad(): next(c.model.encoder.parameters()).fill_(float("nan"))
    c.encode(0.1 * np.ones(1600, np.float32), 16000)

@case(CLIFailed, "utt9.wav is empty", "--skip-bad", out="c.npz", absent=("wavs[",))
def cli_count_over_an_empty_file(t):
    cli(*COUNT, "--data", _folder_with(t, "utt9.wav", lambda p: sf.write(p, np.zeros(0, np.float32), 16000)), "--out", t / "c.npz")

@case(CLIFailed, "utt9.wav contains NaN", "--skip-bad", out="c.npz", absent=("wavs[",))
def cli_count_over_a_nan_file(t):
    cli(*COUNT, "--data", _folder_with(t, "utt9.wav", lambda p: sf.write(p, np.full(800, np.nan, np.float32), 16000, subtype="FLOAT")),
        "--out", t / "c.npz")

@case(CLIFailed, "utt9.wav lasts", "shorter than one", "--skip-bad", out="c.npz", absent=("wavs[",))
def cli_count_over_a_too_short_file(t):
    cli(*COUNT, "--data", _folder_with(t, "utt9.wav", lambda p: save_audio(p, np.zeros(100, np.float32), 16000)), "--out", t / "c.npz")

@case(CLIFailed, "can't decode", "utt9.wav", "--skip-bad", out="c.npz")
def cli_count_over_an_undecodable_file(t):
    cli(*COUNT, "--data", _folder_with(t, "utt9.wav", lambda p: p.write_bytes(b"RIFF\0\0not a wave" * 20)), "--out", t / "c.npz")

@case(ValueError, "skipped 1 bad file", "skip_bad=True")
def resuming_a_run_that_skipped_files_without_skip_bad(t):
    folder = _folder_with(t, "utt9.wav", lambda p: sf.write(p, np.zeros(0, np.float32), 16000))
    count_corpus(AudioFolder(folder), *toys(), checkpoint=t / "ck.npz", progress=False, cache=False, skip_bad=True)
    keep(t / "ck.npz")
    count_corpus(AudioFolder(folder), *toys(), checkpoint=t / "ck.npz", progress=False, cache=False)


# 5. two runs on one --out: the second is refused while the first holds the lock
@case(CLIFailed, "already running on it", "pid", out="c.npz")
def cli_count_while_another_process_counts_into_the_same_out(t):
    import time
    keep(counter().save(t / "c.partial.npz"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from codecswap_nb.cli import output_lock\n"
                               "with output_lock(Path(sys.argv[1])): time.sleep(60)", str(t / "c.npz")])
    try:
        lock = t / "c.npz.lock"
        for _ in range(600):
            if lock.exists() and lock.read_text().strip() == str(holder.pid): break
            time.sleep(0.05)
        cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--resume")
    finally:
        holder.kill(); holder.wait()
        (t / "c.npz.lock").unlink(missing_ok=True)


# 6. untrusted inputs cannot demand huge memory
@case(ValueError, "members a counts file never has", "extra.npy")
def counts_file_with_a_huge_extra_member(t):
    p = counter().save(t / "c.npz")
    with zipfile.ZipFile(p, "a", zipfile.ZIP_DEFLATED) as z:
        with z.open("extra.npy", "w", force_zip64=True) as f:
            for _ in range(16): f.write(bytes(2**24))         # 256 MiB of zeros, 256 KB on disk
    keep(p)
    CooccurrenceCounter.load(p)

@case(CLIFailed, "members larger than counts of", "data")
def cli_inspect_counts_with_an_oversized_member(t):
    p = counter().save(t / "c.npz")
    with np.load(p) as z: arrays = {k: z[k] for k in z.files}
    np.savez_compressed(p, **dict(arrays, data=np.zeros(2**22)))
    cli("inspect", keep(p))

@case(ValueError, "slow.wav", "sample rate 1 Hz is outside 1000-384000 Hz")
def loading_a_wav_that_claims_1_hz(t):
    sf.write(t / "slow.wav", np.zeros(20000, np.int16), 1, subtype="PCM_16"); load_audio(t / "slow.wav")

@case(CLIUsage, "--utterances", "between 1 and 1000")
def cli_corpus_with_a_billion_utterances(t): cli("corpus", t / "corpus", "--utterances", 10**9)

@case(CLIUsage, "--speakers", "between 2 and 1000")
def cli_corpus_with_a_million_speakers(t): cli("corpus", t / "corpus", "--speakers", 10**6)


# 7. a plain dac_24khz state dict is not dac_16khz weights
@case(ValueError, "is not a dac_16khz checkpoint", "load it as dac_24khz")
def plain_dac24_state_dict_loaded_as_dac16(t):
    import dac
    from codecswap_nb.codecs import _dac_kwargs, load_codec
    torch.save(dac.DAC(**_dac_kwargs("dac_24khz")).state_dict(), t / "dac24.pth")
    load_codec("dac_16khz", weights=str(t / "dac24.pth"))


# 8, 9. permissions: unreadable folders and files, unwritable outputs (children held to permissions)
def _chmod_back(*paths):
    for p in paths: p.chmod(0o755 if p.is_dir() else 0o644)

@case(CLIFailed, "permission denied", "cannot list this folder", "spk2", out="c.npz")
def cli_count_over_an_unreadable_subfolder(t):
    folder = wavs(t); wavs(folder, name="spk2"); (folder / "spk2").chmod(0)
    try: unprivileged_cli(t, *COUNT, "--data", folder, "--out", t / "c.npz")
    finally: _chmod_back(folder / "spk2")

@case(CLIFailed, "cannot be read (permission denied)", "utt1.wav", out="c.npz", absent=("decode",))
def cli_count_over_an_unreadable_file(t):
    folder = wavs(t); (folder / "utt1.wav").chmod(0)
    try: unprivileged_cli(t, *COUNT, "--data", folder, "--out", t / "c.npz")
    finally: _chmod_back(folder / "utt1.wav")

@case(CLIFailed, "--out", "cannot write in", "choose a writable folder")
def cli_count_into_a_read_only_folder(t):
    (t / "ro").mkdir(); keep(counter().save(t / "ro" / "old.npz")); (t / "ro").chmod(0o555)
    try: unprivileged_cli(t, *COUNT, "--data", wavs(t), "--out", t / "ro" / "c.npz")
    finally: _chmod_back(t / "ro")

@case(CLIFailed, "--checkpoint", "cannot write in", out="c.npz")
def cli_count_with_a_checkpoint_in_a_read_only_folder(t):
    (t / "ro").mkdir(); (t / "ro").chmod(0o555)
    try: unprivileged_cli(t, *COUNT, "--data", wavs(t), "--out", t / "c.npz", "--checkpoint", t / "ro" / "ck.npz")
    finally: _chmod_back(t / "ro")


# 10. raw exception types never reach the user
@case(CLIUsage, "--device foo", "not a torch device", out="c.npz")
def cli_count_on_device_foo(t): cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--device", "foo")

@case(CLIUsage, "--device meta", "cannot run on 'meta'", out="c.npz")
def cli_count_on_the_meta_device(t): cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--device", "meta")

@case(CLIUsage, "--device mps", out="c.npz")
def cli_count_on_mps_without_mps(t):
    if torch.backends.mps.is_available(): pytest.skip("this machine has MPS")
    cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--device", "mps")

@case(CLIUsage, "--window", "at most 60 seconds")
def cli_count_with_an_astronomical_window(t): cli(*COUNT, "--data", t, "--out", t / "c.npz", "--window", "1e308")

@case(CLIUsage, "--seed", "between 0 and 4294967295")
def cli_count_with_a_seed_of_10_to_the_30(t): cli(*COUNT, "--data", t, "--out", t / "c.npz", "--seed", 10**30)

@case(CLIUsage, "level_map=[7, 7]", "for each of the 3 new levels", out="new_lm")
def cli_transfer_with_a_level_map_out_of_range(t):
    counter().save(t / "c.npz")
    cli("transfer", "--checkpoint", reference_lm(t), "--counts", t / "c.npz", "--out", t / "new_lm", "--option", "level_map=[7,7]")

@case(CLIFailed, "is corrupted", "meta.corpus must be a dict", absent=("AttributeError",))
def cli_inspect_counts_with_a_malformed_header(t):
    p = counter().save(t / "c.npz")
    with np.load(p) as z: arrays = {k: z[k] for k in z.files}
    np.savez(p, **dict(arrays, header=np.array(json.dumps(dict(json.loads(str(arrays["header"])), meta=dict(corpus=5))))))
    cli("inspect", keep(p))

@case(CLIFailed, "is corrupted", "seconds", out="c.npz")
def cli_resume_from_a_checkpoint_with_a_malformed_header(t):
    p = counter().save(t / "c.partial.npz")
    with np.load(p) as z: arrays = {k: z[k] for k in z.files}
    np.savez(p, **dict(arrays, header=np.array(json.dumps(dict(json.loads(str(arrays["header"])), seconds=float("nan"))))))
    keep(p)
    cli(*COUNT, "--data", wavs(t), "--out", t / "c.npz", "--resume")

@case(CLIFailed, "config.json is not an audiolm checkpoint config", out="new_lm")
def cli_transfer_of_a_checkpoint_whose_config_is_a_list(t):
    counter().save(t / "c.npz"); lm = reference_lm(t); (lm / "config.json").write_text("[1, 2]")
    cli("transfer", "--checkpoint", lm, "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIFailed, "config.json is malformed", out="new_lm")
def cli_transfer_of_a_checkpoint_whose_config_is_not_an_object(t):
    counter().save(t / "c.npz"); lm = reference_lm(t)
    (lm / "config.json").write_text(json.dumps({"format": "codecswap_nb.audiolm/1", "config": 5}))
    cli("transfer", "--checkpoint", lm, "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIUsage, "--pattern", "must stay inside --data", out="c.npz")
def cli_count_with_a_pattern_that_leaves_data(t):
    wavs(t, name="B")
    cli(*COUNT, "--data", wavs(t, name="A"), "--pattern", "../B/*.wav", "--out", t / "c.npz")

@case(ValueError, "must stay inside")
def audio_folder_pattern_that_leaves_the_root(t):
    wavs(t, name="B"); AudioFolder(wavs(t, name="A"), "../B/*.wav")

@case(CLIFailed, "already exists", "--overwrite")
def cli_transfer_over_an_existing_model_folder(t):
    counter().save(t / "c.npz")
    (t / "new_lm").mkdir(); (t / "new_lm" / "precious.txt").write_text("do not lose me"); keep(t / "new_lm" / "precious.txt")
    cli("transfer", "--checkpoint", reference_lm(t), "--counts", t / "c.npz", "--out", t / "new_lm")

@case(CLIUsage, "which is the --layout input")
def cli_transfer_whose_new_layout_would_overwrite_its_input_layout(t):
    counter().save(t / "c.npz")
    torch.save({f"embs.{l}.weight": torch.randn(18, 4) for l in range(2)}, t / "old.pt")
    (t / "new.layout.json").write_text(json.dumps(dict(kind="per_codebook", embeddings="embs", heads=None, n_q=2,
                                                       codebook_size=16, n_special=2, codec=OLD_CFG)))
    keep(t / "new.layout.json")
    cli("transfer", "--checkpoint", t / "old.pt", "--layout", t / "new.layout.json", "--counts", t / "c.npz",
        "--out", t / "new.pt", "--overwrite")

@case(CLIUsage, "--out must differ from --checkpoint")
def cli_transfer_onto_its_own_input(t):
    counter().save(t / "c.npz"); lm = reference_lm(t); keep(lm / "model.safetensors")
    cli("transfer", "--checkpoint", lm, "--counts", t / "c.npz", "--out", lm, "--overwrite")


# ---- the test --------------------------------------------------------------------------------------------
def _leftovers(root):
    "Temporary files that an atomic write would have left behind."
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_enough_cases():
    assert len(CASES) >= 80


@pytest.mark.parametrize("make,exc,needles,out,absent", CASES)
def test_bad_input(make, exc, needles, out, absent, tmp_path, request, monkeypatch):
    kw = {}
    if "codec" in make.__code__.co_varnames[:make.__code__.co_argcount]: kw["codec"] = request.getfixturevalue("codec")
    if "monkeypatch" in make.__code__.co_varnames[:make.__code__.co_argcount]: kw["monkeypatch"] = monkeypatch
    KEPT.clear()
    with pytest.raises(exc) as e:
        make(tmp_path, **kw)
    msg = str(e.value)
    assert msg.strip(), "the error has no message"
    for n in needles:
        assert n.lower() in msg.lower(), f"{n!r} not in the message: {msg}"
    for n in absent:
        assert n.lower() not in msg.lower(), f"{n!r} should not be in the message: {msg}"
    if out is not None:
        assert not (tmp_path / out).exists(), f"{out} was left behind after the error"
    for p, digest in KEPT.items():
        assert p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == digest, f"{p} was lost or changed by the error"
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


# ---- issue 14: behaviours that are not errors ------------------------------------------------------------
def test_inspect_json_is_strict_json(tmp_path, capsys):
    "Levels never seen have no concentration: `inspect --json` writes null there, never NaN (which is not JSON)."
    c = CooccurrenceCounter(OLD_CFG, NEW_CFG)
    c.update(np.zeros((2, 5), dtype=int), np.zeros((3, 5), dtype=int))   # most rows unseen
    c.save(tmp_path / "c.npz")
    assert main(["inspect", str(tmp_path / "c.npz"), "--json"]) == 0
    def no_constants(name): raise AssertionError(f"{name} in the JSON output")
    s = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert s["files"] == 1 and None not in s["top1"][0]


def test_cli_count_reencodes_a_corrupt_codes_cache(tmp_path, capsys):
    "A cache shard that is truncated, or carries an unexpected member, is encoded again with a one-line warning."
    folder, cache = wavs(tmp_path), tmp_path / "codes"
    base = [*COUNT[:-3], "--every", "1", "--cache", str(cache), "--data", str(folder)]  # COUNT without --no-cache
    assert main([*base, "--out", str(tmp_path / "a.npz"), "--quiet"]) == 0
    shards = sorted(cache.glob("*/shard-*.npz"))
    assert len(shards) == 6                                              # 3 files, 2 codecs
    shards[0].write_bytes(shards[0].read_bytes()[:100])                  # truncated
    with zipfile.ZipFile(shards[1], "a") as z: z.writestr("extra.npy", bytes(2**20))
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b.npz"), "--quiet"]) == 0
    err = capsys.readouterr().err
    a, b = CooccurrenceCounter.load(tmp_path / "a.npz"), CooccurrenceCounter.load(tmp_path / "b.npz")
    assert (a.counts != b.counts).nnz == 0 and a.n_files == b.n_files == 3
    for bad in shards[:2]: assert np.load(bad, allow_pickle=False)["codes"].size > 0   # repaired in place
