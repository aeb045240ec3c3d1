"""Extraction benchmark: marble-eval's extraction against the MERT model-card loop, and memory.

``run(report, quick=False)`` measures, in one run on the same files, with random weights in the
full MERT-95M layout (``quick``: the tiny test layout, fewer and shorter files), on a GPU when
there is one:
- x realtime of the model-card loop: fp32, eager attention, one whole clip at a time, inputs
  normalised by transformers' own Wav2Vec2FeatureExtractor, hidden states stacked and averaged;
- x realtime of marble-eval's default extraction (``extract_dataset`` with default settings: fp32,
  the reference, on every device) and of the same with the opt-in ``--precision bf16``, the files
  being a whole-clip dataset;
- the ratios, by wall clock and by CPU seconds (this process and its decode workers; steadier
  when other work shares the machine). The loops alternate (card, default, bf16, bf16, default,
  card) so that a change of machine load hits all alike;
- model FLOP/s (counted from config.json) as a share of this machine's matmul peak;
- the drift of the cached states from the card's fp32 states (max abs, relative);
- peak RSS of extracting a 13-minute track and a 30-second one in 30 s windows, each in a fresh
  subprocess (VmHWM, reset after loading the model; ru_maxrss where Linux's reset is missing),
  and of decoding alone: streamed windows vs the whole file.

``python -m bench.extraction drift`` measures the bf16-vs-fp32 change of probe metrics on the
fixture dataset (tens of minutes on 2 cores; not part of ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from marble_eval.audio.decode import load_audio
from marble_eval.datasets.base import Dataset, Item
from marble_eval.features.extract import ExtractSettings, extract_dataset, open_cache
from marble_eval.models import load_model
from marble_eval.models.tiny import build_tiny_mert

Report = Callable[[str, float, str], None]
RATE = 24000
FULL_SIZE = dict(hidden_size=768, layers=12, conv_dim=[512] * 7, num_attention_heads=12, intermediate_size=3072,
                 num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def build_model(directory: Path, quick: bool) -> Path:
    """A random checkpoint in the MERT hub layout: full MERT-95M size, or the tiny test size."""
    return build_tiny_mert(directory, weights="safetensors", seed=0, **({} if quick else FULL_SIZE))


def write_clip(path: Path, seconds: float, rate: int, channels: int, seed: int) -> Path:
    """Music-like test audio (a few partials over noise), written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    partials = rng.uniform(110, 1760, size=4)
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels,
                      subtype="MPEG_LAYER_III" if path.suffix == ".mp3" else "PCM_16") as handle:
        for start in range(0, int(seconds * rate), 10 * rate):
            t = (start + np.arange(min(10 * rate, int(seconds * rate) - start))) / rate
            tone = sum(0.15 * np.sin(2 * np.pi * f * t * (1 + 0.01 * np.sin(t))) for f in partials)
            block = tone[:, None] + 0.05 * rng.standard_normal((len(t), channels))
            handle.write(np.clip(block, -1, 1).astype(np.float32))
    return path


def forward_flops(config: dict, samples: int) -> float:
    """Multiply-add FLOPs (x2) of one MERT/HuBERT forward over ``samples`` samples, from config.json."""
    flops, frames, channels = 0.0, samples, 1
    for width, kernel, stride in zip(config["conv_dim"], config["conv_kernel"], config["conv_stride"]):
        frames = (frames - kernel) // stride + 1
        flops += 2 * channels * width * kernel * frames
        channels = width
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    flops += 2 * channels * hidden * frames  # feature projection
    flops += 2 * hidden * (hidden // config["num_conv_pos_embedding_groups"]) * config["num_conv_pos_embeddings"] * frames
    per_layer = 2 * frames * (4 * hidden * hidden + 2 * hidden * inner) + 4 * frames * frames * hidden
    return flops + config["num_hidden_layers"] * per_layer


def matmul_peak_flops(dtype: torch.dtype, device: str = "cpu", size: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of one size x size matmul in ``dtype`` (this machine's practical peak)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the decode workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def card_loop(model_dir: Path, device: str) -> Callable[[list[Path]], np.ndarray]:
    """The model-card recipe (fp32, eager attention, one whole clip at a time) on native HubertModel."""
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    from marble_eval.models.families.mert import hubert_config

    config = hubert_config(json.loads((model_dir / "config.json").read_text()), str(model_dir))
    model = HubertModel.from_pretrained(str(model_dir), config=config, dtype=torch.float32,
                                        attn_implementation="eager").eval().to(device)
    processor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)

    def embed(paths: list[Path]) -> np.ndarray:
        out = []
        for path in paths:
            inputs = processor(load_audio(path, RATE), sampling_rate=RATE, return_tensors="pt").to(device)
            with torch.no_grad():
                outputs = model(**inputs, output_hidden_states=True)
            out.append(torch.stack(outputs.hidden_states).squeeze(1).mean(-2).cpu().numpy())
        return np.stack(out)

    return embed


def _dataset(paths: list[Path], window: float) -> Dataset:
    items = [Item(f"clip{index}", "train", path.name) for index, path in enumerate(paths)]
    return Dataset(name="bench", task="multilabel", vocabulary=["x"], items=items, data_dir=paths[0].parent,
                   window_seconds=window)


def default_extraction(model_dir: Path, work: Path, device: str,
                       precision: str = "fp32") -> Callable[[list[Path]], np.ndarray]:
    """marble-eval's extraction (default settings at ``precision``) of files as a whole-clip dataset,
    into a fresh cache each call."""
    model = load_model(str(model_dir), device=device)
    settings = ExtractSettings(precision=precision)
    calls = []

    def embed(paths: list[Path]) -> np.ndarray:
        calls.append(1)
        root, dataset = work / f"cache-{precision}-{len(calls)}", _dataset(paths, 0.0)
        extract_dataset(model, dataset, root, settings, show_progress=False)
        features, _ = open_cache(root, model, dataset, settings).load([item.id for item in dataset.items])
        return np.stack([f[0] for f in features]).astype(np.float32)

    return embed


def _timed(function: Callable[[list[Path]], np.ndarray], paths: list[Path], device: str
           ) -> tuple[np.ndarray, float, float]:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = function(paths)
    if device != "cpu":
        torch.cuda.synchronize()
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def bf16_is_fast(device: str) -> bool:
    """Whether bf16 matmuls beat fp32 on ``device`` (a small timed probe: CPUs without native bf16
    emulate it many times slower, and a full bf16 extraction there would take most of the bench)."""
    if torch.device(device).type == "cuda":
        return True
    a = torch.randn(256, 256)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up
        started = time.perf_counter()
        for _ in range(20):
            x @ x
        seconds[dtype] = time.perf_counter() - started
    return seconds[torch.bfloat16] < seconds[torch.float32]


def speed(report: Report, model_dir: Path, paths: list[Path], warm_up: Path, work: Path, device: str) -> None:
    """Card loop vs marble-eval (default fp32, and opt-in bf16), alternated so that load changes hit all alike."""
    audio = sum(len(load_audio(path, RATE)) for path in paths) / RATE
    default = ExtractSettings().precision
    loops = {"card": card_loop(model_dir, device),
             "default": default_extraction(model_dir, work, device)}
    fast_bf16 = bf16_is_fast(device)
    if fast_bf16:
        loops["bf16"] = default_extraction(model_dir, work, device, precision="bf16")
    for loop in loops.values():
        loop([warm_up])  # first-call allocations and kernel selection
    totals = {name: [0.0, 0.0] for name in loops}
    results = {}
    order = ("card", "default", "bf16", "bf16", "default", "card") if fast_bf16 else ("card", "default", "default", "card")
    for name in order:
        results[name], wall, cpu = _timed(loops[name], paths, device)
        totals[name][0] += wall
        totals[name][1] += cpu
    realtime = {name: 2 * audio / wall for name, (wall, _) in totals.items()}
    report(f"card loop: fp32 eager, 1 clip/call ({device})", realtime["card"], "x realtime")
    report(f"marble-eval default: {default} sdpa batched ({device})", realtime["default"], "x realtime")
    report("speed-up default / card loop (wall clock)", realtime["default"] / realtime["card"], "x")
    report("speed-up default / card loop (CPU seconds)", totals["card"][1] / totals["default"][1], "x")
    if fast_bf16:
        report(f"marble-eval opt-in bf16: sdpa batched ({device})", realtime["bf16"], "x realtime")
        report("speed-up bf16 / card loop (wall clock)", realtime["bf16"] / realtime["card"], "x")
    else:
        print("  opt-in bf16: not measured (a bf16 matmul is slower than fp32 here: bf16 is emulated)", flush=True)
    config = json.loads((model_dir / "config.json").read_text())
    flops = 2 * sum(forward_flops(config, len(load_audio(path, RATE))) for path in paths)  # two passes each
    for name, dtype_name in (("card", "fp32"), ("default", default)):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
        peak = matmul_peak_flops(dtype, device)
        report(f"{name}: share of {dtype_name} matmul peak {peak / 1e9:.0f} GFLOP/s", 100 * flops / totals[name][0] / peak,
               "%")
    for name in [name for name in ("default", "bf16") if name in results]:
        diff = np.abs(results[name] - results["card"])
        report(f"states {name} vs card fp32: max abs diff", float(diff.max()), "")
        report(f"states {name} vs card fp32: max abs diff / max |state|", float(diff.max() / np.abs(results["card"]).max()),
               "")


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Current RSS (MB); the peak is reset to it where Linux allows (else ru_maxrss keeps the import peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss() -> float:
    """Peak RSS (MB) since the last reset."""
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(model_dir: str, path: str, window: float, device: str) -> dict[str, float]:
    """Run in a fresh process: extraction of one file (decoding in this process), or only its decoding
    (model_dir "decode": streamed windows; "load": the whole file at once). RSS after set-up and at peak."""
    from marble_eval.audio.decode import stream_windows

    model = None if model_dir in ("decode", "load") else load_model(model_dir, device=device)
    loaded = _reset_peak_rss()
    if model is None:
        windows = [load_audio(Path(path), RATE)] if model_dir == "load" else stream_windows(Path(path), RATE, window)
        seconds = sum(len(w) for w in windows) / RATE
    else:
        with tempfile.TemporaryDirectory() as root:
            settings = ExtractSettings(num_workers=0)
            seconds = extract_dataset(model, _dataset([Path(path)], window), Path(root), settings,
                                      show_progress=False).audio_seconds
    return {"loaded_mb": loaded, "peak_mb": _peak_rss(), "audio_seconds": seconds}


def _peak(what: str, path: Path, window: float, device: str) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.extraction", "memory", what, str(path), str(window), device]
    run = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if run.returncode != 0:
        raise RuntimeError(f"memory subprocess failed: {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def memory(report: Report, model_dir: Path, tracks: list[Path], window: float, device: str) -> None:
    """Peak RSS of extracting each track (shortest first) in a fresh subprocess; then decoding alone."""
    figures = [_peak(str(model_dir), path, window, device) for path in tracks]
    report("tiny layout: RSS after loading the model", figures[0]["loaded_mb"], "MB")
    for figure in figures:
        report(f"tiny layout: peak RSS, {_duration(figure['audio_seconds'])} track, {window:g} s windows",
               figure["peak_mb"], "MB")
    report("tiny layout: peak RSS ratio, longest / shortest track", figures[-1]["peak_mb"] / figures[0]["peak_mb"], "x")
    longest = _duration(figures[-1]["audio_seconds"])
    streamed, whole = _peak("decode", tracks[-1], window, device), _peak("load", tracks[-1], window, device)
    report(f"decode only, {longest} track: streamed windows, peak RSS growth",
           streamed["peak_mb"] - streamed["loaded_mb"], "MB")
    report(f"decode only, {longest} track: whole file, peak RSS growth", whole["peak_mb"] - whole["loaded_mb"], "MB")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f}-min" if seconds >= 90 else f"{seconds:.0f} s"


def run(report: Report, quick: bool = False, device: str | None = None, full_memory: bool = False) -> None:
    """The extraction section of `make bench` (see the module docstring); a GPU when there is one.

    Memory compares a 13-minute and a 30-second track with the tiny layout (model activations
    small, so any growth of the decode side would show) and with the full layout (13-minute
    track only with ``full_memory``: minutes of compute on a CPU).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_files, seconds, long_seconds = (2, 10.0, 180.0) if quick else (2, 30.0, 780.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = build_model(work / "tiny", quick=True)
        model_dir = tiny if quick else build_model(work / "model", quick=False)
        (work / "clips").mkdir()
        paths = [write_clip(work / "clips" / f"clip{i}.mp3", seconds, 44100, 2, seed=i) for i in range(n_files)]
        warm_up = write_clip(work / "warm-up.mp3", 2.0, 44100, 2, seed=99)
        report("audio per pass (mp3, 44.1 kHz stereo)", n_files * seconds, "s")
        speed(report, model_dir, paths, warm_up, work, device)
        tracks = [write_clip(work / f"track-{length:.0f}s.mp3", length, 22050, 1, seed=10)
                  for length in (30.0, min(120.0, long_seconds), long_seconds)]
        memory(report, tiny, tracks, 30.0, device)
        if not quick:
            figures = [_peak(str(model_dir), path, 30.0, device) for path in (tracks[0], tracks[-1])[:2 if full_memory else 1]]
            report("full layout: RSS after loading the model", figures[0]["loaded_mb"], "MB")
            for figure in figures:
                report(f"full layout: peak RSS, {_duration(figure['audio_seconds'])} track, 30 s windows",
                       figure["peak_mb"], "MB")


def _linear_probe_metrics(cache, dataset) -> dict[str, float]:
    """Test macro ROC-AUC and mAP (points) of a convex probe: logistic regression, one per tag, on the
    mean of hidden states 1..L-1, standardised on train. Deterministic, so a metric change is the features'."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.multiclass import OneVsRestClassifier

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        items = dataset.split(name)
        features = cache.load([item.id for item in items])[0]
        return np.stack([f.astype(np.float64).mean(axis=0)[1:].mean(axis=0) for f in features]), \
            dataset.label_matrix(items)

    (train_x, train_y), (test_x, test_y) = split("train"), split("test")
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-8
    probe = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=5000)).fit((train_x - mean) / std, train_y)
    scores = probe.predict_proba((test_x - mean) / std)
    tags = [t for t in range(test_y.shape[1]) if 0 < test_y[:, t].sum() < len(test_y)]
    return {"roc_auc": 100 * roc_auc_score(test_y[:, tags], scores[:, tags], average="macro"),
            "map": 100 * average_precision_score(test_y[:, tags], scores[:, tags], average="macro")}


def _fp16_copy(cache, dataset, root: Path):
    """The same features as stored by the default fp16 cache (what fp16 storage alone changes)."""
    from dataclasses import replace

    from marble_eval.features.cache import FeatureCache

    copy = FeatureCache(root, replace(cache.key, storage="fp16")).create()
    ids = [item.id for item in dataset.items]
    features, frames = cache.load(ids)
    copy.write_shard({item_id: (f, fr) for item_id, f, fr in zip(ids, features, frames)})
    return copy


def probe_drift(report: Report, seeds: int = 5, work: Path | None = None, model_spec: str | None = None) -> None:
    """bf16 vs fp32 extraction of the fixture dataset: pooled-state drift and probe-metric change.

    Probes: a convex one (logistic regression, deterministic) and the MARBLE MLP (quick grid,
    ``seeds`` seeds). Control: the same fp32 features rounded to the default fp16 storage, a
    3e-4 relative perturbation that every cache already carries. ``model_spec``: a real checkpoint
    (hub id or directory) instead of random weights in the full MERT-95M layout.
    """
    from marble_eval.datasets.registry import load_dataset
    from marble_eval.pipeline import run_probe
    from marble_eval.probes import GridSpec, load_recipe

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work or tmp)
        model_dir = work / "model"
        if model_spec is None and not (model_dir / "config.json").exists():
            build_model(model_dir, quick=False)
        model = load_model(model_spec or str(model_dir))
        dataset = load_dataset(str(repo / "benchmarks" / "fixture.yaml"), data_dir=work / "audio")
        ids = [item.id for item in dataset.items]
        caches = {}
        for precision in ("fp32", "bf16"):
            settings = ExtractSettings(precision=precision, storage="fp32")
            summary = extract_dataset(model, dataset, work / "cache", settings, show_progress=False)
            if summary.extracted:
                report(f"fixture extraction {precision}", summary.realtime, "x realtime")
            caches[f"{precision}"] = open_cache(work / "cache", model, dataset, settings)
            caches[f"{precision}, fp16 storage"] = _fp16_copy(caches[precision], dataset, work / "rounded")
        reference = np.stack(caches["fp32"].load(ids)[0])
        for name in ("fp32, fp16 storage", "bf16", "bf16, fp16 storage"):
            other = np.stack(caches[name].load(ids)[0]).astype(np.float32)
            report(f"pooled states [{name}] vs fp32: max abs difference", float(np.abs(other - reference).max()), "")
            report(f"pooled states [{name}] vs fp32: relative L2",
                   float(np.linalg.norm(other - reference) / np.linalg.norm(reference)), "")
        linear = {name: _linear_probe_metrics(cache, dataset) for name, cache in caches.items()}
        mlp = {name: run_probe(cache, dataset, model.info, load_recipe("mlp"), GridSpec.quick(seeds=list(range(seeds))),
                               show_progress=False).model_dump(mode="json") for name, cache in caches.items()}
        for metric in ("roc_auc", "map"):
            report(f"logistic probe {metric}, fp32", linear["fp32"][metric], "points")
            for name in ("fp32, fp16 storage", "bf16", "bf16, fp16 storage"):
                report(f"logistic probe {metric} change [{name}] - fp32", linear[name][metric] - linear["fp32"][metric],
                       "points")
            base = mlp["fp32"]["summary"][metric]
            report(f"MLP probe {metric}, fp32 (mean of {seeds} seeds; seed std {100 * base['std']:.2f})",
                   100 * base["mean"], "points")
            for name in ("fp32, fp16 storage", "bf16", "bf16, fp16 storage"):
                report(f"MLP probe {metric} change [{name}] - fp32",
                       100 * (mlp[name]["summary"][metric]["mean"] - base["mean"]), "points")


def _report(name: str, value: float, unit: str) -> None:
    print(f"  {name:<66} {value:>10.4f} {unit}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extraction", description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="run", choices=["run", "drift", "memory"])
    parser.add_argument("args", nargs="*", help="memory: MODEL_DIR AUDIO WINDOW_SECONDS DEVICE (used by run)")
    parser.add_argument("--device", default=None, help="run: torch device (default: cuda when available)")
    parser.add_argument("--full-memory", action="store_true",
                        help="run: also the 13-min track with the full-size layout (minutes on a CPU)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="drift: keep model, audio and caches here (reused)")
    parser.add_argument("--model", default=None, help="drift: a real checkpoint instead of random weights")
    args = parser.parse_args(argv)
    if args.what == "memory":
        print(json.dumps(memory_child(args.args[0], args.args[1], float(args.args[2]), args.args[3])))
    elif args.what == "drift":
        probe_drift(_report, work=args.work, model_spec=args.model)
    else:
        run(_report, quick=args.quick, device=args.device, full_memory=args.full_memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
