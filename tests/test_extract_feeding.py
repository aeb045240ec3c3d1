"""How extraction feeds a device: normalisation in the workers, workers and batch sizes per device, the
distributed ranks' liveness, and (where CUDA exists) pinned, overlapped batches equal to the CPU's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from marble_eval.audio.decode import normalize
from marble_eval.datasets.registry import load_dataset
from marble_eval.features.embedder import BatchEmbedder, worker_preprocess
from marble_eval.features.extract import ExtractSettings, batch_plan, extract_dataset, open_cache
from marble_eval.features.liveness import Heartbeat, RankWatch, heartbeat_path, part_path
from marble_eval.features.windows import WindowBatch, default_num_workers
from marble_eval.models import load_model

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (this machine has no GPU or a CPU torch)")


@pytest.fixture(scope="module")
def model(tiny_mert_dirs):
    return load_model(str(tiny_mert_dirs["safetensors"]))


def test_the_workers_apply_exactly_the_models_normalisation(model) -> None:
    function, in_main = worker_preprocess(model)
    assert not in_main
    wave = (0.3 * np.random.default_rng(2).standard_normal(9000) - 0.1).astype(np.float32)
    worked = function(wave.copy()) if function is not None else wave
    assert worked.tobytes() == model.preprocess(wave.copy()).tobytes()

    class Unusual(type(model)):
        def preprocess(self, wave: np.ndarray) -> np.ndarray:
            return (2.0 * wave).astype(np.float32)

    odd = copy.copy(model)
    odd.__class__ = Unusual
    assert worker_preprocess(odd) == (None, True)  # not recognised: the main process applies it, as before
    assert worker_preprocess(object()) == (None, False)


def test_a_preprocessed_batch_goes_straight_to_the_forward(model) -> None:
    waves = np.random.default_rng(3).standard_normal((3, 6000)).astype(np.float32)
    seen = []
    spy = copy.copy(model)
    spy.pooled_states = lambda batch: seen.append(batch) or model.pooled_states(batch)
    normalised = torch.from_numpy(np.stack([normalize(w) for w in waves]))
    done = BatchEmbedder(spy, 8).submit(WindowBatch(normalised, [(i, 0) for i in range(3)], preprocessed=True))
    assert len(seen) == 1 and torch.equal(seen[0], normalised)  # no split, renormalise or restack
    expected, _ = model.embed_windows(list(waves))
    np.testing.assert_allclose(done.states, expected, rtol=0, atol=1e-5)


def test_workers_per_rank_come_from_the_cores() -> None:
    assert default_num_workers("cpu", cores=16) == 1
    assert default_num_workers("cuda", cores=16) == 15
    assert default_num_workers("cuda", local_ranks=4, cores=64) == 15
    assert default_num_workers("cuda", local_ranks=8, cores=8) == 1


def test_batches_fill_the_audio_budget_on_a_gpu_and_stay_at_8_on_cpu(model) -> None:
    cpu = batch_plan(model, ExtractSettings())
    assert cpu.batch_size == 8
    on_gpu = copy.copy(model)
    on_gpu.device = torch.device("cuda")
    plan = batch_plan(on_gpu, ExtractSettings())
    assert plan.capacity(30 * 24000) == 16  # 480 s of audio per forward: 16 windows of 30 s, not 8
    assert batch_plan(on_gpu, ExtractSettings(batch_size=4)).capacity(30 * 24000) == 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rank_zero_stops_waiting_for_a_rank_that_stopped_beating(tmp_path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    clock = FakeClock()
    watch = RankWatch(parts, world_size=3, dead_after=180.0, clock=clock)
    heartbeat_path(parts, 1).write_text("1")
    heartbeat_path(parts, 2).write_text("1")
    part_path(parts, 0).write_text("{}")
    beats = iter(range(2, 1000))

    def pause(seconds: float) -> None:  # time passes; rank 2 keeps beating until it finishes, rank 1 is silent
        clock.now += seconds
        if clock.now < 100:
            heartbeat_path(parts, 2).write_text(str(next(beats)))
        elif not part_path(parts, 2).exists():
            part_path(parts, 2).write_text("{}")

    done, dead = watch.wait(pause=pause, poll=5.0)
    assert done == {0, 2} and dead == {1}
    assert 180.0 <= clock.now <= 190.0  # minutes, not a 24 h barrier


def test_a_rank_sees_a_dead_peer_and_a_finished_one_is_not_dead(tmp_path) -> None:
    parts = tmp_path / "parts"
    beat = Heartbeat(parts, rank=0, world_size=3, dead_after=60.0)
    clock = FakeClock()
    beat.watch.clock = clock
    beat.beat()
    part_path(parts, 2).write_text("{}")  # rank 2 finished: never dead
    clock.now = 61.0
    beat.beat()
    assert beat.dead_peers == {1}  # rank 1 never beat within a minute


def test_a_dead_ranks_items_are_listed_as_missing_and_a_rerun_resumes(tmp_path) -> None:
    from marble_eval.features.cache import CacheKey, FeatureCache
    from marble_eval.features.distributed import merge_and_list_missing

    key = CacheKey(dataset="d-v1", dataset_identity="0" * 64, model_id="m", model_fingerprint="f" * 64, family="mert",
                   sample_rate=24000, n_hidden_states=2, dim=3, window_seconds=0.0, max_seconds=None, precision="fp32")
    cache = FeatureCache(tmp_path, key).create()
    ids = [f"item{i}" for i in range(6)]
    cache.write_shard({item_id: (np.ones((1, 2, 3), np.float32), np.array([5])) for item_id in ids[0::2]})
    cache.write_part("rank-0", {}, {"extracted": 3})
    heartbeat_path(cache.directory / "parts", 1).write_text("7")
    cache.write_shard({"item1": (np.ones((1, 2, 3), np.float32), np.array([5]))})  # rank 1 finished one, then died
    failures, _ = merge_and_list_missing(cache, ids, [f"{i}.wav" for i in ids], world_size=2, dead={1})
    assert sorted(failures) == ["item3", "item5"]
    assert all("rank 1 stopped" in failure["reason"] for failure in failures.values())
    assert cache.failures() == failures and not (cache.directory / "parts").exists()


@CUDA
def test_cuda_extraction_pinned_and_overlapped_equals_cpu(tiny_mert_dirs, small_fixture_yaml, tmp_path_factory,
                                                          tmp_path) -> None:
    dataset = load_dataset(str(small_fixture_yaml), data_dir=tmp_path_factory.getbasetemp() / "tiny-fixture-audio")
    settings = ExtractSettings(storage="fp32", num_workers=2)
    cpu_model = load_model(str(tiny_mert_dirs["safetensors"]))
    gpu_model = load_model(str(tiny_mert_dirs["safetensors"]), device="cuda")
    cpu = extract_dataset(cpu_model, dataset, tmp_path / "cpu", settings, show_progress=False)
    gpu = extract_dataset(gpu_model, dataset, tmp_path / "gpu", settings, show_progress=False)
    assert gpu.extracted == cpu.extracted == 24
    ids = [item.id for item in dataset.items]
    ours = open_cache(tmp_path / "gpu", gpu_model, dataset, settings).load(ids)[0]
    theirs = open_cache(tmp_path / "cpu", cpu_model, dataset, settings).load(ids)[0]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)  # fp32 with TF32 off


@CUDA
def test_cuda_oom_back_off_with_a_real_allocation(model) -> None:
    gpu = copy.copy(model)
    gpu.device = torch.device("cuda")
    gpu.module = copy.deepcopy(model.module).to("cuda")
    total = torch.cuda.get_device_properties(0).total_memory

    def greedy(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > 1:
            torch.empty(2 * total, dtype=torch.uint8, device="cuda")  # a real out-of-memory error
        return type(model).pooled_states(gpu, batch)

    gpu.pooled_states = greedy
    waves = torch.from_numpy(np.random.default_rng(1).standard_normal((4, 6000)).astype(np.float32))
    embedder = BatchEmbedder(gpu, 8)
    assert embedder.submit(WindowBatch(waves, [(i, 0) for i in range(4)])) is None  # one batch late
    done = embedder.drain()
    assert embedder.splits == 3 and done.states.shape[0] == 4
