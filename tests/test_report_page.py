"""Plots and the HTML report on synthetic results shaped like the fixture's; the page in headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import numpy as np
import pytest

from marble_eval.cli import main
from marble_eval.files import sha256_json
from marble_eval.report.page import build_page
from marble_eval.report.plots import layer_curve_frame, per_tag_frame, plot_all, tag_category
from marble_eval.results.schema import ProbeResult
from marble_eval.results.store import predictions_path, read_results, write_result

TAGS = ["raga--kalyani", "raga--todi", "tala--adi", "instrument--violin", "tone-220"]


def _metrics(auc: float) -> dict:
    return {"roc_auc": auc, "map": auc - 0.2, "micro_f1": auc - 0.3, "macro_f1": auc - 0.4, "excluded_tags": []}


def _result(model: str, skill: float, dataset: str = "carnatic") -> ProbeResult:
    """A result JSON as `marble-eval eval` writes it: grid over 3 layers + weighted, 2 lrs, 2 seeds."""
    grid, selected = [], []
    for seed in (0, 1):
        for layer in (0, 1, 2, "weighted"):
            for lr in (1e-3, 1e-2):
                depth = 0.05 * (layer if isinstance(layer, int) else 2.5)
                quality = skill + depth + (0.02 if lr == 1e-3 else 0.0) + 0.005 * seed
                grid.append({"lr": lr, "layer": layer, "seed": seed, "valid": _metrics(quality),
                             "test": _metrics(quality - 0.01), "epochs": 20, "best_epoch": 12})
        best = max((g for g in grid if g["seed"] == seed), key=lambda g: g["valid"]["roc_auc"])
        per_tag = {t: {"roc_auc": skill + 0.03 * i, "ap": 0.5} for i, t in enumerate(TAGS)}
        selected.append({**{k: best[k] for k in ("lr", "layer", "seed", "valid")},
                         "test": {**best["test"], "per_tag": per_tag}})
    tests = [s["test"] for s in selected]
    summary = {m: {"mean": float(np.mean([t[m] for t in tests])), "std": float(np.std([t[m] for t in tests])),
                   "n": 2} for m in ("roc_auc", "map", "micro_f1", "macro_f1")}
    return ProbeResult.model_validate({
        "created": "2026-01-01T00:00:00+00:00",
        "model": {"id": model, "family": "mert", "fingerprint": f"fp-{model}", "hidden_states": 3, "dim": 32,
                  "parameters": 1000},
        "dataset": {"name": dataset, "version": 1, "task": "multilabel", "tags": TAGS,
                    "splits": {"train": 160, "valid": 80, "test": 80},
                    "test_items_digest": sha256_json(sorted(f"i{k}" for k in range(80)))},
        "protocol": {"recipe": {"name": "mlp"}, "grid": {"lrs": [1e-3, 1e-2], "layers": [0, 1, 2, "weighted"],
                                                        "seeds": [0, 1]},
                     "window_seconds": 0.0, "max_seconds": None, "precision": "fp32", "storage": "fp16",
                     "cache_key": f"key-{model}"},
        "extraction": {"cache_dir": "/cache"},
        "summary": summary, "selected": selected, "grid": grid, "excluded_tags": [],
        "environment": {"git_commit": "abc123", "packages": {"torch": "2.x"}, "python": "3.11", "platform": "linux"},
        "timings": {"load_seconds": 0.1, "probe_seconds": 1.0}})


def _write(tmp_path, with_predictions: bool = True) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((80, len(TAGS))) < 0.4).astype(np.float32)
    for model, skill, shift in (("ntua-slp/CultureMERT-95M", 0.7, 3.0), ("m-a-p/MERT-v1-95M", 0.6, 0.5)):
        path = write_result(tmp_path, _result(model, skill))
        if with_predictions:
            probs = 1 / (1 + np.exp(-(shift * y + rng.normal(size=(2, *y.shape)))))
            np.savez(predictions_path(path), item_ids=np.array([f"i{k}" for k in range(80)]), y_true=y,
                     probs=probs.astype(np.float32), seeds=np.array([0, 1]), tags=np.array(TAGS))


def test_layer_curve_takes_the_best_lr_by_validation_and_averages_seeds():
    frame = layer_curve_frame(_result("m", 0.6))
    assert frame["layer"].tolist() == ["0", "1", "2", "weighted"]
    assert (frame["lr"] == 1e-3).all()  # lr 1e-3 has the better validation score at every layer
    assert frame.set_index("layer").loc["1", "valid"] == pytest.approx(0.6 + 0.05 + 0.02 + 0.0025)
    assert frame.set_index("layer").loc["1", "test"] == pytest.approx(0.6 + 0.05 + 0.02 + 0.0025 - 0.01)


def test_per_tag_categories_and_plot_files(tmp_path):
    assert [tag_category(t) for t in TAGS] == ["raga", "raga", "tala", "instrument", "other"]
    results = [_result("a/model", 0.6), _result("b/model", 0.7)]
    frame = per_tag_frame(results)
    assert set(frame["category"]) == {"raga", "tala", "instrument", "other"} and len(frame) == 10
    paths = plot_all(results, tmp_path)
    assert sorted(p.name for p in paths["layers"] + paths["tags"]) == [
        "layers_carnatic_roc_auc.png", "layers_carnatic_roc_auc.svg", "tags_carnatic.png", "tags_carnatic.svg"]
    for path in paths["layers"] + paths["tags"]:
        head = path.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in path.read_bytes()


def test_report_page_has_leaderboard_significance_plots_and_provenance(tmp_path):
    _write(tmp_path / "results")
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "site"),
                 "--bootstrap", "200"]) == 0
    page = (tmp_path / "site" / "index.html").read_text()
    assert '<table id="leaderboard-0" class="sortable">' in page
    assert "m-a-p/MERT-v1-95M (published)" in page and "Δ ntua-slp/CultureMERT-95M (measured - published)" in page
    assert page.count("data:image/png;base64,") == 3  # ROC-AUC and mAP per layer, per tag and (tmp_path / "site" / "figures" / "tags_carnatic.svg").exists()
    assert "fp-ntua-slp/CultureMERT-95M" in page and "abc123" in page  # provenance
    significance = re.search(r'<table id="significance".*?</table>', page, re.S).group(0)
    assert "ntua-slp/CultureMERT-95M" in significance and "<span class=sig>*</span>" in significance
    assert "<link" not in page and 'src="http' not in page  # self-contained


def test_report_without_predictions_notes_it(tmp_path):
    _write(tmp_path / "results", with_predictions=False)
    page = build_page(read_results(tmp_path / "results"), tmp_path / "site", n_boot=50).read_text()
    assert "no significance test" in page and "No pair of comparable models" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browser(tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def _first_column(dom: str) -> list[str]:
    table = re.search(r'<table id="leaderboard-0".*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    return [html.unescape(re.sub("<[^>]+>", "", cell)) for cell in re.findall(r"<tr[^>]*><td[^>]*>(.*?)</td>", table)]


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (CI installs Debian's chromium)")
def test_page_renders_and_sorts_in_headless_chromium(tmp_path):
    _write(tmp_path / "results")
    page = build_page(read_results(tmp_path / "results"), tmp_path / "site", n_boot=100)
    url = page.resolve().as_uri()
    rows = {}
    for sort in ("Avg:desc", "Avg", "Model"):
        done = _browser(tmp_path, "--dump-dom", f"{url}#sort={sort}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert 'aria-sort="' in done.stdout  # the script ran and marked the sorted column
        rows[sort] = _first_column(done.stdout)
    measured_first = rows["Avg:desc"]
    assert len(measured_first) == 7  # 2 measured + 3 published + 2 Δ (both ids are published ones)
    # Avg over the datasets every measured row has (Carnatic): the cards' Carnatic ROC-AUC / mAP means.
    averages = {"ntua-slp/CultureMERT-95M (published)": 61.15, "ntua-slp/CultureMERT-TA-95M (published)": 61.2,
                "m-a-p/MERT-v1-95M (published)": 57.3}
    shown = {name: float(f"{value + 1e-9:.1f}") for name, value in averages.items()}  # the one-decimal cells
    # the two CultureMERT rows tie at 61.2: the page's sort is stable, so they keep their table order
    assert [name for name in measured_first if name in shown] == sorted(shown, key=shown.get, reverse=True)
    assert [name for name in rows["Avg"] if name in shown] == sorted(shown, key=shown.get)
    assert set(rows["Avg"]) == set(measured_first)
    assert rows["Model"] == sorted(rows["Model"], key=str.lower)
    shot = tmp_path / "shot.png"
    done = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", url)
    assert done.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def test_report_has_a_section_per_compared_pair(tmp_path):
    _write(tmp_path / "results")
    assert main(["report", "--results-dir", str(tmp_path / "results"), "--output", str(tmp_path / "site"),
                 "--bootstrap", "100", "--compare", "CultureMERT-95M", "MERT-v1-95M"]) == 0
    page = (tmp_path / "site" / "index.html").read_text()
    assert "<h2 id=\"compare-0\">ntua-slp/CultureMERT-95M vs m-a-p/MERT-v1-95M</h2>" in page
    summary = re.search(r'<table id="compare-0-summary".*?</table>', page, re.S).group(0)
    assert "Carnatic" in summary and "<span class=sig>*</span>" in summary  # shift 3.0 vs 0.5: significant
    tags = re.search(r'<table id="compare-0-carnatic".*?</table>', page, re.S).group(0)
    assert all(f">{tag}<" in tags for tag in TAGS)


def test_layer_curves_share_a_relative_depth_axis_when_depths_differ():
    from marble_eval.report.plots import depths_differ, layer_x
    from tests.result_builders import make_result

    small, large = make_result("a", "lyra", 0.8, 0.5), make_result("b", "lyra", 0.8, 0.5)
    large.model.hidden_states = 25
    assert not depths_differ([small, small]) and depths_differ([small, large])
    assert layer_x(12, 13, relative=True) == layer_x(24, 25, relative=True) == 1.0
    assert layer_x(6, 13, relative=True) == layer_x(12, 25, relative=True) == 0.5
    assert layer_x(6, 13, relative=False) == 6.0


def test_a_split_too_small_to_select_on_is_warned_about():
    from marble_eval.report.page import small_split_warnings
    from tests.result_builders import make_result

    small, large = make_result("small", "lyra", 0.8, 0.5), make_result("large", "lyra", 0.8, 0.5)
    large.dataset.splits["valid"] = 124  # Lyra's real validation split
    (warning,) = small_split_warnings([small, large])  # the builder's 10 validation items
    assert warning.startswith("small: only 10 validation items; selecting among 4 configurations")


def test_no_selection_warning_where_nothing_was_selected():
    from marble_eval.report.page import small_split_warnings
    from tests.result_builders import make_result

    quick = make_result("quick", "lyra", 0.8, 0.5, lrs=(1e-3,), protocol={"grid": {"lrs": [1e-3], "layers": ["weighted"],
                                                                                "seeds": [0]}})
    assert small_split_warnings([quick]) == []  # one configuration per seed: nothing to select among


def test_layer_ticks_are_whole_numbers_with_one_w():
    from marble_eval.report.plots import layer_ticks

    full, quick = _result("a/model", 0.6), _result("b/model", 0.5)
    quick.grid[:] = [g for g in quick.grid if g.layer == "weighted"]
    frames = [(r, layer_curve_frame(r)) for r in (full, quick)]
    weighted_x, ticks = layer_ticks(frames, relative=False)
    assert list(ticks.values()).count("w") == 1 and ticks[weighted_x] == "w"
    assert [ticks[x] for x in sorted(ticks)] == ["0", "1", "2", "w"]
    _, relative = layer_ticks(frames, relative=True)
    assert list(relative.values()).count("w") == 1


def _task_result(model: str, dataset: str, task: str, skill: float) -> ProbeResult:
    """A result of any task type with a grid and selected probes, as `marble-eval eval` writes it."""
    from marble_eval.tasks import TASK_TYPES, expand_metrics
    from tests.result_builders import VOCABULARY, make_task_result

    targets = VOCABULARY[task] if TASK_TYPES[task].labels == "targets" else ()
    keys = expand_metrics(TASK_TYPES[task].metrics, targets)
    grid, selected = [], []
    for seed in (0, 1):
        for layer in (0, 1, 2, "weighted"):
            quality = skill + 0.05 * (layer if isinstance(layer, int) else 2.5) + 0.005 * seed
            scores = {key: quality - 0.01 * k for k, key in enumerate(keys)}
            grid.append({"lr": 1e-3, "layer": layer, "seed": seed, "valid": scores, "test": scores, "epochs": 5,
                         "best_epoch": 3})
        best = grid[-1]
        selected.append({key: best[key] for key in ("lr", "layer", "seed", "valid", "test")})
    result = make_task_result(model, dataset, task, tuple(grid[-1]["test"][k] for k in keys), std=0.01,
                              seeds=(0, 1), selected=selected, grid=grid)
    return result


def test_every_task_type_through_leaderboard_compare_export_and_the_page(tmp_path, capsys):
    from marble_eval.report.export import export
    from tests.result_builders import make_result, predictions_for, write_with_predictions

    rng = np.random.default_rng(4)
    ids = [f"i{k}" for k in range(60)]
    results = tmp_path / "results"
    for task, dataset in (("multiclass", "games"), ("regression", "emo"), ("key", "gs-key")):
        y = None
        for model, skill in (("/data/models/mert-ft", 0.5), ("m-a-p/MERT-v1-95M", 0.6)):
            result = _task_result(model, dataset, task, skill)
            result.model.licence = "CC-BY-NC-4.0" if model.startswith("m-a-p") else None
            result.dataset.splits["test"] = len(ids)
            result.dataset.test_items_digest = sha256_json(sorted(ids))
            y, outputs = predictions_for(task, len(ids), 2, 4.0 * skill, rng, y)
            write_with_predictions(results, result, y, outputs, ids)
    write_result(results, make_result("m-a-p/MERT-v1-95M", "tunes", 0.8, 0.5))  # a custom tagging dataset
    for fmt in ("md", "csv", "latex"):
        assert main(["leaderboard", "--results-dir", str(results), "--format", fmt, "--bootstrap", "50"]) == 0
        out = capsys.readouterr().out
        assert "key score" in out.lower() and "mert-ft" in out and "/data/models" not in out
    assert main(["leaderboard", "--results-dir", str(results), "--layout", "marble", "--bootstrap", "0"]) == 0
    assert "EMO (R² arousal / valence)" in capsys.readouterr().out
    assert main(["compare", "mert-ft", "MERT-v1-95M", "--results-dir", str(results), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "| GS-key" in out and "| key score" in out and "| R² valence" in out and "paired bootstrap over 60" in out
    everything = read_results(results)
    assert "r2_valence" in export(everything, "tidy-csv") and "key\\_score" not in export(everything, "latex")
    assert "Key score" in export(everything, "latex") and "r_squared" in export(everything, "model-index")
    assert main(["report", "--results-dir", str(results), "--output", str(tmp_path / "site"),
                 "--bootstrap", "50", "--compare", "mert-ft", "MERT-v1-95M"]) == 0
    page = (tmp_path / "site" / "index.html").read_text()
    for title in ("accuracy / macro-F1", "R²", "key score / accuracy", "MARBLE tasks, each with its own metric"):
        assert f"<h3>{html.escape(title)} (%)</h3>" in page
    assert "Turkish-makam" not in page and "(published)" in page  # published rows only where they have numbers
    assert 'id="summary-gs-key"' in page and "/data/models/mert-ft" in page  # full path only in provenance
    assert "<td>model licence</td><td style='text-align:left'>CC-BY-NC-4.0</td>" in page
    assert "Δ key score" in page and "Δ R²" in page  # each task's own bootstrap statistic
    assert page.count("data:image/png;base64,") == 2 + 1 + 2  # layer plots of each task's first table (tunes: no grid)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (CI installs Debian's chromium)")
def test_a_page_of_every_task_type_renders_in_headless_chromium(tmp_path):
    results = tmp_path / "results"
    for task, dataset in (("multiclass", "games"), ("regression", "emo"), ("key", "gs-key")):
        for model, skill in (("a/model", 0.5), ("b/model", 0.6)):
            write_result(results, _task_result(model, dataset, task, skill))
    page = build_page(read_results(results), tmp_path / "site", n_boot=0)
    done = _browser(tmp_path, "--dump-dom", f"{page.resolve().as_uri()}#sort=Avg:desc")
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'aria-sort="descending"' in done.stdout and 'id="summary-emo"' in done.stdout
    assert _first_column(done.stdout) == ["b/model", "a/model"]  # accuracy / macro-F1 table, Avg descending


def test_plots_name_a_model_path_by_its_short_form():
    frame = per_tag_frame([_result("/home/me/ckpt/my-model/", 0.6)])
    assert set(frame["model"]) == {"my-model"}


def test_runs_of_one_model_are_told_apart_in_the_plots():
    default = _result("fixture", 0.6)
    quick = _result("fixture", 0.5)
    quick.protocol.grid.seeds = [0]
    quick.protocol.batch_unit = "window"
    frame = per_tag_frame([default, quick])
    assert set(frame["model"]) == {"fixture", "fixture (1 seed, window batches)"}
