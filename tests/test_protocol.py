"""Protocol presets: resolution, overrides, one-line errors, and what a result records."""

from __future__ import annotations

import pytest

from marble_eval.errors import MarbleEvalError
from marble_eval.protocol import PROBE_FIELDS, known_protocols, load_protocol, resolve_protocol


def test_both_presets_ship_and_fix_every_probe_field():
    assert {"marble-v1", "culturemert"} <= set(known_protocols())
    v1 = resolve_protocol("marble-v1")
    assert v1.seeds == (1234,) and v1.precision == "fp32" and v1.overrides == ()
    assert v1.probe == {"batch_unit": "item", "weighted_init": "randn", "selection": "roc_auc_ap_mean",
                        "selection_scope": "per_seed", "empty_tags": "v1"}  # AP of an empty tag left out, as v1 printed
    default = resolve_protocol()
    assert default.preset == "culturemert" and default.seeds == (0, 1, 2, 3, 4)
    assert default.probe["empty_tags"] == "exclude" and set(default.probe) == set(PROBE_FIELDS)


def test_overrides_replace_single_fields_and_are_named():
    chosen = resolve_protocol("culturemert", seeds=(0,), batch_unit="window", precision=None)
    assert chosen.seeds == (0,) and chosen.probe["batch_unit"] == "window"
    assert chosen.overrides == ("seeds", "batch_unit")  # precision=None is "not given"
    same = resolve_protocol("culturemert", seeds=(0, 1, 2, 3, 4))
    assert same.overrides == ()  # restating the preset's own value is no override


def test_the_record_holds_every_key_the_results_promise():
    record = resolve_protocol("marble-v1").record(window_seconds=30.0, max_seconds=150.0)
    assert {"batch_unit", "weighted_init", "selection", "selection_scope", "empty_tags", "precision",
            "vocabulary", "window_seconds", "max_seconds", "preset"} <= set(record)
    assert record["preset"] == "marble-v1" and record["window_seconds"] == 30.0


@pytest.mark.parametrize("call,message", [
    (lambda: resolve_protocol("nope"), "unknown protocol 'nope'; known protocols: culturemert, marble-v1"),
    (lambda: resolve_protocol(None, batch_unit="epoch"), "--batch-unit 'epoch': must be one of item, window"),
    (lambda: resolve_protocol(None, colour="red"), "unknown protocol field 'colour'"),
])
def test_bad_protocols_are_one_line_errors(call, message):
    with pytest.raises(MarbleEvalError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_a_preset_yaml_with_an_unknown_key_names_it(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nversion: '1'\nprobe: {batch_unit: item, colour: red}\n")
    with pytest.raises(MarbleEvalError, match=r"mine\.yaml: probe\.colour"):
        load_protocol(path)
