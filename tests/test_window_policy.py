"""Which windows are cut: partial windows dropped where a dataset says so (GiantSteps' full 30-s clips),
and a dataset that leaves the window open takes the model family's native context."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from marble_eval.audio.decode import stream_windows
from marble_eval.datasets.base import Dataset
from marble_eval.features.extract import ExtractSettings, effective_window

RATE = 1000


def _windows(tmp_path, seconds: float, drop_partial: bool) -> list[int]:
    path = tmp_path / f"{seconds}.wav"
    t = np.arange(int(round(seconds * RATE))) / RATE
    sf.write(path, (0.1 * np.sin(2 * np.pi * 50 * t)).astype(np.float32), RATE)
    return [len(w) for w in stream_windows(path, RATE, 30.0, drop_partial=drop_partial, block_seconds=7.0)]


@pytest.mark.parametrize("seconds, kept, dropped", [
    (95.0, [30000, 30000, 30000, 5000], [30000, 30000, 30000]),   # 5 s tail: kept by default, dropped as partial
    (89.98, [30000, 30000, 29980], [30000, 30000, 29980]),         # 20 ms short still counts as a full clip
    (60.0, [30000, 30000], [30000, 30000]),
    (20.0, [20000], []),                                          # no full window at all
])
def test_partial_windows_are_dropped_only_where_the_dataset_says(tmp_path, seconds, kept, dropped):
    assert _windows(tmp_path, seconds, drop_partial=False) == kept
    assert _windows(tmp_path, seconds, drop_partial=True) == dropped


def _model(native: float | None = None, fixed: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(fixed_window_seconds=fixed, native_window_seconds=native))


def test_an_open_window_takes_the_models_native_context():
    dataset = Dataset(name="d", task="multilabel", vocabulary=["a"], items=[])
    assert dataset.window_seconds is None
    settings = ExtractSettings()
    assert effective_window(_model(native=30.0), dataset, settings) == 30.0      # MuQ, MusicFM, Whisper
    assert effective_window(_model(native=None), dataset, settings) == 0.0       # MERT: the whole clip
    assert effective_window(_model(native=30.0), replace(dataset, window_seconds=5.0), settings) == 5.0
    assert effective_window(_model(native=30.0), replace(dataset, window_seconds=0.0), settings) == 0.0
    assert effective_window(_model(native=30.0), dataset, ExtractSettings(window_seconds=10.0)) == 10.0
    assert effective_window(_model(native=30.0, fixed=10.0), dataset, settings) == 10.0   # MAEST's fixed input
