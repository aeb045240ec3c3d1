"""Which run of a model stands for it, and how runs and models are named in every table.

One rule picks the reference run of a (model, dataset) with several results; the leaderboard,
``compare``, ``export`` (LaTeX, model-index, tidy) and the report all use it:

0. (a `--limit` smoke run only where the model has no full run there;)
1. the protocol preset's own grid and seeds first (none of grid, seeds, lrs, layers overridden);
2. then the most seeds;
3. then the latest (``created``).

The other runs are named by what differs from the reference run (grid, seeds, batch unit, ...),
e.g. "fixture (quick grid, 1 seed, window batches)". A model given as a path is shown by its last
path component; the full id stays in the provenance.
"""

from __future__ import annotations

import re
from collections import defaultdict

from marble_eval.report.comparable import items_key, protocol_differences
from marble_eval.results.schema import WEIGHTED, ModelRecord, ProbeResult

GRID_OVERRIDES = frozenset({"grid", "seeds", "lrs", "layers"})
GRID_NAMES = {"marble": "full grid", "quick": "quick grid", "v1": "v1's configuration"}
# Protocol fields named by the grid, seeds and batch-unit parts of a run's description (or not at all).
_DESCRIBED = ("grid", "overrides", "batch_unit", "preset")


def uses_preset_grid(result: ProbeResult) -> bool:
    """True when the run used its protocol preset's own grid and seeds (nothing of them overridden)."""
    return result.protocol.preset is not None and not GRID_OVERRIDES & set(result.protocol.overrides)


def n_seeds(result: ProbeResult) -> int:
    """Seeds the run trained."""
    return len(result.protocol.grid.seeds)


def order_runs(runs: list[ProbeResult]) -> list[ProbeResult]:
    """``runs`` (one model on one dataset) in reference order: the reference run first."""
    latest_first = sorted(runs, key=lambda r: r.created, reverse=True)
    return sorted(latest_first, key=lambda r: (r.dataset.limit is not None, not uses_preset_grid(r), -n_seeds(r)))


def runs_by_model(results: list[ProbeResult]) -> dict[tuple[str, str], list[ProbeResult]]:
    """{(model fingerprint, dataset): runs in reference order}."""
    groups: dict[tuple[str, str], list[ProbeResult]] = defaultdict(list)
    for result in results:
        groups[(result.model.fingerprint, result.dataset.name)].append(result)
    return {key: order_runs(runs) for key, runs in groups.items()}


def reference_runs(results: list[ProbeResult]) -> list[ProbeResult]:
    """The reference run of every (model, dataset) among ``results``."""
    return [runs[0] for runs in runs_by_model(results).values()]


def _looks_like_path(model_id: str) -> bool:
    return (model_id.startswith(("/", "./", "../", "~", "\\")) or "\\" in model_id or model_id.count("/") > 1
            or re.match(r"^[A-Za-z]:[\\/]", model_id) is not None)


def short_model_id(model_id: str) -> str:
    """A hub id or name as it is; a path by its last component ("/runs/mert-ft/" -> "mert-ft")."""
    text = model_id.rstrip("/\\")
    if not _looks_like_path(text):
        return text or model_id
    return re.split(r"[\\/]", text)[-1] or model_id


def model_name(model: ModelRecord) -> str:
    """How tables, plots and model-index name a model: ``--name`` when given, else the short id."""
    return model.name or short_model_id(model.id)


def model_labels(results: list[ProbeResult]) -> dict[str, str]:
    """{fingerprint: label}: the model's name, with the fingerprint's head where two models share it."""
    names = {r.model.fingerprint: model_name(r.model) for r in results}
    counts: dict[str, int] = defaultdict(int)
    for name in names.values():
        counts[name] += 1
    return {fp: name if counts[name] == 1 else f"{name} [{fp[:8]}]" for fp, name in names.items()}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _preset_grid(preset: str | None) -> str | None:
    """The grid name of a known preset ("marble" or "quick"); None when the preset is unknown."""
    from marble_eval.errors import MarbleEvalError
    from marble_eval.protocol import known_protocols, load_protocol

    if preset is None or preset not in known_protocols():
        return None
    try:
        return load_protocol(preset).grid
    except MarbleEvalError:
        return None


def grid_label(result: ProbeResult) -> str:
    """"full grid", "quick grid", or the grid spelled out ("grid 2 lrs x layers 0, weighted")."""
    overrides = set(result.protocol.overrides)
    if result.protocol.grid_name in GRID_NAMES:  # recorded since schema 3
        return GRID_NAMES[result.protocol.grid_name]
    name = _preset_grid(result.protocol.preset)
    if name is not None and not overrides & {"lrs", "layers"}:
        if "grid" in overrides:  # written before grid_name was recorded, when the grids were marble and quick
            name = {"marble": "quick", "quick": "marble"}.get(name)
        if name in GRID_NAMES:
            return GRID_NAMES[name]
    return "grid " + grid_spelled(result)


def grid_spelled(result: ProbeResult) -> str:
    """The recorded grid in words: "6 lrs x all layers + weighted", "1 lr x weighted"."""
    grid = result.protocol.grid
    layers = list(grid.layers)
    every = [*range(result.model.hidden_states), WEIGHTED]
    if layers == every:
        shown = "all layers + weighted"
    elif layers == [WEIGHTED]:
        shown = "weighted"
    else:
        shown = "layers " + ", ".join(map(str, layers))
    return f"{_plural(len(grid.lrs), 'lr')} × {shown}"


def describe_run(run: ProbeResult, reference: ProbeResult) -> str:
    """What makes ``run`` differ from ``reference`` (same model and dataset), in a few words."""
    parts = []
    a, b = run.protocol, reference.protocol
    if (a.grid.lrs, a.grid.layers) != (b.grid.lrs, b.grid.layers):
        parts.append(grid_label(run))
    if len(a.grid.seeds) != len(b.grid.seeds):
        parts.append(_plural(len(a.grid.seeds), "seed"))
    elif a.grid.seeds != b.grid.seeds:
        parts.append("seeds " + ", ".join(map(str, a.grid.seeds)))
    if a.batch_unit != b.batch_unit:
        parts.append(f"{a.batch_unit or 'unrecorded'} batches")
    if run.dataset.limit != reference.dataset.limit:
        parts.append(f"--limit {run.dataset.limit}" if run.dataset.limit is not None else "full run")
    if a.preset != b.preset:
        parts.append(f"preset {a.preset or 'none'}")
    mine = a.model_dump(mode="json")
    for field in protocol_differences(run, reference):
        top, _, rest = field.partition(".")
        if top in _DESCRIBED or (top == "recipe" and rest in mine):  # the recipe repeats the protocol's choices
            continue
        value = mine.get(field) if "." not in field else None
        parts.append(f"{field} {value}" if value is not None and not isinstance(value, (dict, list)) else field)
    if not parts and items_key(run) != items_key(reference):
        parts.append("other test items")
    if not parts:
        parts.append(f"run of {run.created}")
    return ", ".join(parts)


def run_labels(results: list[ProbeResult]) -> dict[int, str]:
    """{id(result): label}: the model's label for its reference runs, "label (what differs)" for its
    other runs, e.g. "fixture (quick grid, 1 seed, window batches)"; the tables', plots' and page's names."""
    labels = model_labels(results)
    names: dict[int, str] = {}
    for (fingerprint, _), runs in runs_by_model(results).items():
        names[id(runs[0])] = labels[fingerprint]
        seen: set[str] = set()
        for run in runs[1:]:
            text = describe_run(run, runs[0])
            text = f"{text}, run of {run.created}" if text in seen else text
            seen.add(text)
            names[id(run)] = f"{labels[fingerprint]} ({text})"
    return names
