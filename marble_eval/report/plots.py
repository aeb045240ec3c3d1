"""Figures from the results JSONs (matplotlib, Agg backend; each saved as PNG and SVG).

- layer curves: validation and test scores of one metric (default: the task's main metric, from
  marble_eval.tasks) per hidden state, one figure per dataset, one colour per model. Per layer, the
  lr with the best validation metric averaged over seeds is taken, and its validation and test
  metrics are averaged over seeds; the learned weighted sum of all layers is drawn as one point "w"
  to the right of every model's layers. Ticks are whole hidden-state numbers.
- per-tag ROC-AUC: one figure per dataset, tags grouped by category (the prefix before "--":
  makam, usul, instrument, raga, tala, form, genres, instruments, place; "other" without one), one bar
  per model, mean over seeds of the selected probes' test per-tag ROC-AUC.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from marble_eval.metrics.table import metric_spec
from marble_eval.report.runs import run_labels
from marble_eval.results.schema import ProbeResult
from marble_eval.tasks import task_type

FORMATS = ("png", "svg")
WEIGHTED = "weighted"


def tag_category(tag: str) -> str:
    """The prefix before "--" (e.g. "raga--kalyani" -> "raga"); "other" when there is none."""
    return tag.split("--", 1)[0] if "--" in tag else "other"


def layer_curve_frame(result: ProbeResult, metric: str | None = None) -> pd.DataFrame:
    """[layer, lr, valid, test]: per layer the best lr by mean validation ``metric`` (default: the task's main
    metric), means over seeds."""
    metric = metric or task_type(result.task).main_metric
    rows = [{"layer": str(g.layer), "lr": g.lr, "seed": g.seed, "valid": g.valid.value(metric),
             "test": g.test.value(metric)} for g in result.grid if g.valid and g.test]
    rows = [row for row in rows if row["valid"] is not None and row["test"] is not None]
    if not rows:
        return pd.DataFrame(columns=["layer", "lr", "valid", "test"])
    means = pd.DataFrame(rows).groupby(["layer", "lr"], as_index=False)[["valid", "test"]].mean()
    best = means.loc[means.groupby("layer")["valid"].idxmax()]
    order = sorted(best["layer"], key=lambda layer: (layer == WEIGHTED, int(layer) if layer.isdigit() else 0))
    return best.set_index("layer").loc[order].reset_index()


def per_tag_frame(results: list[ProbeResult]) -> pd.DataFrame:
    """[model, tag, category, auc]: mean over seeds of the selected probes' test per-tag ROC-AUC."""
    labels = run_labels(results)
    rows = []
    for result in results:
        for selected in result.selected:
            for tag, values in ((selected.test.per_tag if selected.test else None) or {}).items():
                if values.roc_auc is not None:
                    rows.append({"model": labels[id(result)], "tag": tag, "category": tag_category(tag),
                                 "auc": values.roc_auc})
    if not rows:
        return pd.DataFrame(columns=["model", "tag", "category", "auc"])
    return pd.DataFrame(rows).groupby(["model", "category", "tag"], as_index=False)["auc"].mean()


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def depths_differ(results: list[ProbeResult]) -> bool:
    """True when the models of ``results`` have different numbers of hidden states."""
    return len({r.model.hidden_states for r in results}) > 1


def layer_x(layer: int, hidden_states: int, relative: bool) -> float:
    """Where hidden state ``layer`` sits on a layer-curve axis: its index, or its relative depth (0..1)."""
    return layer / max(hidden_states - 1, 1) if relative else float(layer)


def layer_ticks(frames: list[tuple[ProbeResult, pd.DataFrame]], relative: bool) -> tuple[float, dict[float, str]]:
    """(x of the weighted-sum point, {x: tick label}) of one layer-curve figure: whole hidden-state numbers
    (or relative depths 0, 0.25, ... 1), and one "w" to the right of every model's layers."""
    ticks: dict[float, str] = {}
    numeric = [layer_x(int(layer), result.model.hidden_states, relative)
               for result, frame in frames for layer in frame["layer"] if layer != WEIGHTED]
    if relative:
        ticks.update({x / 4: f"{x / 4:g}" for x in range(5)})
    else:
        ticks.update({x: str(int(round(x))) for x in numeric})
    weighted_x = 1.15 if relative else (max(numeric) if numeric else 0.0) + 1.5
    if any((frame["layer"] == WEIGHTED).any() for _, frame in frames):
        ticks[weighted_x] = "w"
    return weighted_x, ticks


def plot_layer_curves(results: list[ProbeResult], out_dir: Path, metric: str | None = None) -> list[Path]:
    """One figure per dataset: ``metric`` (default: the task's main metric) per hidden state, validation
    dashed, test solid; returns the files.

    When the models of a dataset differ in depth (a 13-state and a 25-state model), the x axis is the
    relative depth (state / last state), so that the curves share one axis. The weighted sum is one
    "w" tick to the right of every model's layers.
    """
    paths: list[Path] = []
    labels = run_labels(results)
    for dataset in sorted({r.dataset.name for r in results}):
        chosen = [r for r in results if r.dataset.name == dataset]
        shown = metric or task_type(chosen[0].task).main_metric
        relative = depths_differ(chosen)
        frames = [(result, layer_curve_frame(result, shown)) for result in chosen]
        frames = [(result, frame) for result, frame in frames if not frame.empty]
        if not frames:
            continue
        fig, ax = plt.subplots(figsize=(8.0, 4.5))
        weighted_x, ticks = layer_ticks(frames, relative)
        for colour, (result, frame) in enumerate(frames):
            numeric = frame[frame["layer"] != WEIGHTED]
            xs = [layer_x(int(layer), result.model.hidden_states, relative) for layer in numeric["layer"]]
            style = {"color": f"C{colour}", "marker": "o", "markersize": 4}
            model = labels[id(result)]
            if xs:
                ax.plot(xs, 100 * numeric["test"], "-", label=f"{model} test", **style)
                ax.plot(xs, 100 * numeric["valid"], "--", label=f"{model} valid", alpha=0.7, **style)
            weighted = frame[frame["layer"] == WEIGHTED]
            if not weighted.empty:
                ax.plot([weighted_x], 100 * weighted["test"], "D", color=f"C{colour}",
                        label=None if xs else f"{model} test")
                ax.plot([weighted_x], 100 * weighted["valid"], "D", color=f"C{colour}", alpha=0.5, fillstyle="none")
        ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
        ax.set_xlabel("relative depth: hidden state / last state (w = learned weighted sum)" if relative
                      else "hidden state (w = learned weighted sum)", fontsize=11)
        spec = metric_spec(shown)
        ax.set_ylabel(f"{spec.label} (%)" if spec.percent else spec.label, fontsize=11)
        ax.set_title(f"{dataset}: {spec.label} per layer (best lr by validation, mean over seeds)", fontsize=12)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best")
        paths += _save(fig, Path(out_dir), f"layers_{_slug(dataset)}_{_slug(shown)}")
    return paths


def plot_per_tag(results: list[ProbeResult], out_dir: Path) -> list[Path]:
    """One figure per dataset: per-tag test ROC-AUC, tags grouped by category, one bar per model."""
    paths: list[Path] = []
    for dataset in sorted({r.dataset.name for r in results}):
        frame = per_tag_frame([r for r in results if r.dataset.name == dataset])
        if frame.empty:
            continue
        tags = frame[["category", "tag"]].drop_duplicates()
        tags = tags.assign(last=tags["category"] == "other").sort_values(["last", "category", "tag"])
        models = sorted(frame["model"].unique())
        position = {tag: i for i, tag in enumerate(tags["tag"])}
        width = 0.8 / len(models)
        fig, ax = plt.subplots(figsize=(max(6.4, 0.28 * len(position) * max(1, len(models) / 2)), 3.8))
        for k, model in enumerate(models):
            part = frame[frame["model"] == model]
            xs = [position[t] + (k - (len(models) - 1) / 2) * width for t in part["tag"]]
            ax.bar(xs, 100 * part["auc"], width=width, label=model, color=f"C{k}")
        labels = [t.split("--", 1)[-1] for t in tags["tag"]]
        ax.set_xticks(range(len(labels)), labels, rotation=70, ha="right", fontsize=7)
        for category, group in tags.groupby("category", sort=False):
            first, last = position[group["tag"].iloc[0]], position[group["tag"].iloc[-1]]
            ax.axvline(last + 0.5, color="grey", lw=0.6)
            ax.text((first + last) / 2, 101, category, ha="center", va="bottom", fontsize=8, weight="bold")
        ax.axhline(50, color="grey", lw=0.6, ls=":")
        ax.set_ylim(min(40.0, 100 * float(frame["auc"].min()) - 5), 108)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_ylabel("test ROC-AUC (%)")
        ax.set_title(f"{dataset}: per-tag ROC-AUC by category (mean over seeds)", fontsize=9, pad=14)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        paths += _save(fig, Path(out_dir), f"tags_{_slug(dataset)}")
    return paths


def plot_all(results: list[ProbeResult], out_dir: Path) -> dict[str, list[Path]]:
    """Every figure: {"layers": [...], "tags": [...]} (PNG and SVG paths)."""
    return {"layers": plot_layer_curves(results, out_dir), "tags": plot_per_tag(results, out_dir)}
