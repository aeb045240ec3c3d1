"""Security, end to end through the command line: nothing in a checkpoint or a data dir is executed or escapes.

Already covered elsewhere (listed in docs/reliability.md, not repeated here):
remote-code files never imported by the loader (test_models_mert::test_remote_code_files_are_never_imported),
.bin loads through weights_only (test_models_mert::test_weights_only_load_refuses_a_pickle_with_code),
pickled metadata with a wrong sha256 refused before unpickling
(test_datasets::test_reference_hash_mismatch_is_refused_before_unpickling,
test_datasets_reference::test_pickle_with_code_is_refused_without_running_it),
manifest paths that climb out of the data dir (test_manifest::test_paths_never_escape_the_data_dir),
pickled cache shards (test_faults::test_corrupt_or_pickled_shard_is_a_one_line_error).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

from marble_eval.cli import main
from marble_eval.datasets.registry import load_dataset
from marble_eval.features.extract import ExtractSettings, extract_dataset
from marble_eval.models import load_model
from marble_eval.models.tiny import build_tiny_mert


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_auto_map_checkpoint_extracts_without_running_its_code(small_fixture_yaml, tmp_path_factory, tmp_path):
    """config.json names remote classes (auto_map) in a Python file that would leave a marker when imported."""
    directory = build_tiny_mert(tmp_path / "evil", weights="bin")
    marker = tmp_path / "remote-code-ran"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("modeling_evil.py", "configuration_evil.py", "__init__.py"):
        (directory / name).write_text(payload)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (directory / "config.json").write_text(json.dumps(config))
    data_dir = tmp_path_factory.getbasetemp() / "tiny-fixture-audio"
    code, out, err = _cli(["extract", "--model", str(directory), "--dataset", str(small_fixture_yaml),
                           "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0, err
    assert "24 extracted now" in out
    code, _, err = _cli(["embed", "--model", str(directory), str(data_dir / "train/clip0000.wav"),
                         "--output", str(tmp_path / "e.npy")])
    assert code == 0, err
    assert not marker.exists()


def test_symlink_out_of_the_data_dir_is_refused_at_extraction(small_fixture_yaml, tiny_mert_dirs, tmp_path):
    """A data dir entry that is a symlink to a file outside it is reported, never read."""
    data_dir = tmp_path / "audio"
    dataset = load_dataset(str(small_fixture_yaml), data_dir=data_dir)
    secret = tmp_path / "outside" / "secret.wav"
    secret.parent.mkdir()
    victim = dataset.split("train")[0]
    os.replace(data_dir / victim.path, secret)
    (data_dir / victim.path).symlink_to(secret)
    model = load_model(str(tiny_mert_dirs["safetensors"]))
    summary = extract_dataset(model, dataset, tmp_path / "cache", ExtractSettings(num_workers=0),
                              show_progress=False)
    assert list(summary.failures) == [victim.id]
    assert "escapes the data dir" in summary.failures[victim.id]["reason"]
    assert summary.extracted == 23
