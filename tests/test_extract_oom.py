"""Out-of-memory back-off: a batch that does not fit is split and retried; a window that does not fit even alone
fails its item with a hint, and the run goes on (fault injected at the forward call)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import soundfile as sf
import torch

from marble_eval.datasets.registry import load_dataset
from marble_eval.features.embedder import BatchEmbedder
from marble_eval.features.extract import ExtractSettings, extract_dataset, open_cache
from marble_eval.features.windows import WindowBatch
from marble_eval.models import load_model

RATE = 24000


@pytest.fixture(scope="module")
def model(tiny_mert_dirs):
    return load_model(str(tiny_mert_dirs["safetensors"]))


def make_dataset(folder):
    """Four 0.5 s clips (one batch of four equal windows) and one 2 s clip (a window too big to fit)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for index, seconds in enumerate([0.5, 0.5, 0.5, 0.5, 2.0]):
        name = f"clip{index}.wav"
        sf.write(folder / name, (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32), RATE)
        names.append(name)
    (folder / "m.csv").write_text("path,split,labels\n" + "".join(
        f"{name},{split},{tag}\n" for name, split, tag in zip(names, ["train", "train", "valid", "test", "test"],
                                                               ["a", "b", "a", "b", "a"])))
    (folder / "d.yaml").write_text("name: oom\nversion: '1'\ntask: multilabel\nsource: manifest\n"
                                   "options: {manifest: m.csv}\nvocabulary: {rule: top_n, n: 2}\n"
                                   "audio: {window_seconds: 0}\n")
    return load_dataset(str(folder / "d.yaml"), data_dir=folder)


class OutOfMemoryAbove:
    """The forward raises torch.OutOfMemoryError for more than ``rows`` windows or ``samples`` samples."""

    def __init__(self, model, rows: int, samples: int) -> None:
        self.model, self.rows, self.samples, self.calls = model, rows, samples, []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(batch.shape))
        if batch.shape[0] > self.rows or batch.shape[1] > self.samples:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return self.model.pooled_states(batch)


def test_an_oom_splits_the_batch_and_a_window_that_cannot_fit_fails_its_item(model, tmp_path):
    dataset = make_dataset(tmp_path / "audio")
    settings = ExtractSettings(num_workers=0, storage="fp32")
    reference = extract_dataset(model, dataset, tmp_path / "reference", settings, show_progress=False)
    assert reference.extracted == 5 and not reference.failures

    faulty = copy.copy(model)
    forward = OutOfMemoryAbove(model, rows=1, samples=RATE)
    faulty.pooled_states = forward  # the fault is injected at the forward call the extraction makes
    summary = extract_dataset(faulty, dataset, tmp_path / "oom", settings, show_progress=False)

    assert (4, RATE // 2) in forward.calls and (2, RATE // 2) in forward.calls  # split in halves, then again
    assert forward.calls.count((1, RATE // 2)) == 4 and forward.calls.count((1, 2 * RATE)) == 1
    assert summary.extracted == 4 and list(summary.failures) == ["clip4.wav"]
    reason = summary.failures["clip4.wav"]["reason"]
    assert "2.0 s window does not fit in cpu memory even alone" in reason
    assert "--window-seconds" in reason and "--max-seconds" in reason and "\n" not in reason
    ids = [f"clip{index}.wav" for index in range(4)]
    ours, theirs = open_cache(tmp_path / "oom", model, dataset, settings), open_cache(tmp_path / "reference", model,
                                                                                      dataset, settings)
    for a, b in zip(ours.load(ids)[0], theirs.load(ids)[0]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # the same features, one window at a time
    again = extract_dataset(model, dataset, tmp_path / "oom", settings, show_progress=False)
    assert again.extracted == 1 and again.already_cached == 4  # a rerun (say with a shorter window) resumes


def test_the_embedder_keeps_row_order_across_splits(model) -> None:
    waves = torch.from_numpy(np.random.default_rng(1).standard_normal((5, RATE // 4)).astype(np.float32))
    batch = WindowBatch(waves, [(position, 0) for position in range(5)])
    whole = BatchEmbedder(model, 8).submit(batch)
    faulty = copy.copy(model)
    faulty.pooled_states = OutOfMemoryAbove(model, rows=2, samples=RATE)
    embedder = BatchEmbedder(faulty, 8)
    split = embedder.submit(batch)
    assert embedder.splits >= 2 and split.batch.keys == batch.keys
    np.testing.assert_allclose(split.states, whole.states, rtol=0, atol=1e-5)
