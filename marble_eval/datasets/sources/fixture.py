"""A synthetic multi-label tagging dataset, generated deterministically on demand.

Each tag adds one audible component (a tone, a noise band, a pulse train, a chirp), so a
probe on any reasonable features learns it. Files come in several formats, rates and
channel counts so that decoding, downmixing and resampling are exercised end to end.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from marble_eval.datasets.base import Dataset, Item
from marble_eval.datasets.spec import BenchmarkSpec
from marble_eval.paths import cache_root

TAGS = ("tone-220", "tone-880", "tone-3520", "noise-low", "noise-high", "pulse-2hz", "pulse-8hz", "chirp-up")
# (extension, sample rate, channels, soundfile subtype)
FORMATS = (("wav", 16000, 1, "PCM_16"), ("flac", 44100, 2, "PCM_16"), ("mp3", 22050, 1, "MPEG_LAYER_III"),
           ("ogg", 32000, 2, "VORBIS"))
MANIFEST = "manifest.csv"
GENERATOR_VERSION = "2"


@dataclass(frozen=True)
class FixtureOptions:
    """Size of the synthetic set (from the YAML's options)."""

    n_train: int = 200
    n_valid: int = 60
    n_test: int = 60
    seconds: float = 3.0
    tag_probability: float = 0.35
    seed: int = 0


def synthesize(tags: set[str], seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mono audio in [-1, 1] with one component per tag over quiet background noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.02 * rng.standard_normal(len(t))
    gain = lambda: 0.25 * rng.uniform(0.6, 1.4)  # noqa: E731 - per-component loudness jitter
    for tag in sorted(tags):  # sorted: set order varies with PYTHONHASHSEED, the RNG draws must not
        if tag.startswith("tone-"):
            wave += gain() * np.sin(2 * np.pi * float(tag[5:]) * t + rng.uniform(0, 2 * np.pi))
        elif tag.startswith("noise-"):
            low, high = (100, 400) if tag == "noise-low" else (5000, 7500)
            wave += gain() * 3 * _band_noise(len(t), sample_rate, low, high, rng)
        elif tag.startswith("pulse-"):
            rate = float(tag[6:-2])
            phase = (t * rate + rng.uniform()) % 1.0
            wave += gain() * 2 * np.exp(-phase * 40) * rng.standard_normal(len(t))
        elif tag == "chirp-up":
            sweep = 300 + 2500 * (t % 1.0)
            wave += gain() * np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate)
    return np.clip(wave / max(1.0, np.abs(wave).max() / 0.95), -1, 1).astype(np.float32)


def _band_noise(n: int, sample_rate: int, low: float, high: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    band = np.fft.irfft(spectrum, n)
    return band / (band.std() + 1e-9)


def generate(directory: Path, options: FixtureOptions) -> Path:
    """Write the audio files and manifest.csv into ``directory`` (skips when already complete)."""
    directory = Path(directory)
    stamp = directory / "fixture.json"
    wanted = {"generator": GENERATOR_VERSION, **options.__dict__}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(options.seed)
    rows = []
    splits = ["train"] * options.n_train + ["valid"] * options.n_valid + ["test"] * options.n_test
    for index, split in enumerate(splits):
        tags = {tag for tag in TAGS if rng.uniform() < options.tag_probability}
        extension, rate, channels, subtype = FORMATS[index % len(FORMATS)]
        mono = synthesize(tags, options.seconds, rate, rng)
        audio = np.stack([mono, mono * 0.8], axis=1) if channels == 2 else mono
        name = f"{split}/clip{index:04d}.{extension}"
        (directory / split).mkdir(exist_ok=True)
        sf.write(directory / name, audio, rate, subtype=subtype)
        rows.append({"id": f"clip{index:04d}", "split": split, "path": name, "tags": "|".join(sorted(tags))})
    with open(directory / MANIFEST, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "split", "path", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    stamp.write_text(json.dumps(wanted, indent=2))
    return directory


def load(spec: BenchmarkSpec, context) -> Dataset:
    """Registry source "fixture": generate on demand (into --data-dir or the cache) and load."""
    options = FixtureOptions(**spec.options)
    directory = context.data_dir or (context.cache_dir or cache_root()) / "data" / f"fixture-v{spec.version}"
    generate(directory, options)
    with open(Path(directory) / MANIFEST, newline="") as handle:
        items = [Item(row["id"], row["split"], row["path"], tuple(t for t in row["tags"].split("|") if t))
                 for row in csv.DictReader(handle)]
    return Dataset(name=spec.name, task=spec.task, vocabulary=list(TAGS), items=items, version=spec.version,
                   data_dir=Path(directory), max_seconds=spec.audio.max_seconds,
                   window_seconds=spec.audio.window_seconds, vocabulary_source="fixed")
