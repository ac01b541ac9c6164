"""Encode throughput of every codec, in seconds of audio per second of compute (higher is better).

Speech from the offline corpus (built once, cached), `--seconds` of it per codec, encoded one file at a
time (`encode`) and in batches (`encode_batch`). Weights are the pretrained ones when cached, otherwise
seeded random ones (same architecture, so the same cost). Runs on every device given with `--device`
(default: cpu, plus cuda when available). `python benchmarks/encode.py [--seconds S] [--codecs ...]`.
"""
import argparse, os, platform, time

import torch

from codecswap_nb.audio import LibriTTS, resample
from codecswap_nb.corpus import default_corpus
from codecswap_nb.codecs import load_codec, parse_codec_spec

CODECS = ["encodec_24khz:6", "encodec_48khz:6", "dac_16khz", "dac_24khz", "dac_44khz"]


def speech(seconds):
    "About `seconds` of corpus speech as a list of (waveform [1, n], sr)."
    ds = LibriTTS(default_corpus(n_speakers=4, n_utterances=6), "train-clean")
    out, total = [], 0.0
    for u in ds:
        out.append((u.waveform, u.sample_rate)); total += u.waveform.shape[-1] / u.sample_rate
        if total >= seconds: break
    return out, total


def load(spec, device):
    "A codec from a spec, pretrained if its weights are cached, else random; and which it was."
    name, kw = parse_codec_spec(spec)
    try: return load_codec(name, **kw, weights="pretrained", device=device), "pretrained"
    except (FileNotFoundError, OSError, RuntimeError):
        return load_codec(name, **kw, weights="random", device=device, seed=0), "random"


def sync(device):
    if str(device).startswith("cuda"): torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per codec and device")
    ap.add_argument("--codecs", nargs="+", default=CODECS, help="codec specs name[:bandwidth_or_nq]")
    ap.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    torch.manual_seed(0)
    files, total = speech(a.seconds)
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}{gpu}; {len(files)} files, {total:.1f} s of speech")
    print(f"{'codec':18s} {'device':6s} {'weights':10s} {'n_q':>4s} {'encode':>10s} {'encode_batch':>13s}   (s audio / s)")
    for device in a.device:
        for spec in a.codecs:
            codec, w = load(spec, device)
            wavs = [resample(x, sr, codec.sample_rate) for x, sr in files]
            with torch.inference_mode():
                codec.encode(wavs[0], codec.sample_rate)          # warm-up (allocations, cuDNN autotune)
                sync(device); t = time.perf_counter()
                for x in wavs: codec.encode(x, codec.sample_rate)
                sync(device); t1 = time.perf_counter() - t
                t = time.perf_counter()
                codec.encode_batch(wavs, codec.sample_rate, batch_size=a.batch_size)
                sync(device); t2 = time.perf_counter() - t
            print(f"{spec:18s} {device:6s} {w:10s} {codec.n_q:4d} {total / t1:10.1f} {total / t2:13.1f}")
            del codec
            if device.startswith("cuda"): torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
