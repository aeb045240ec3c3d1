"""The probe-protocol choices MARBLE v1 and the CultureMERT cards leave open: their one definition.

Probe recipes (``probes.recipe.ProbeRecipe``) and protocol presets (``protocol.ProtocolPreset``) both
carry these five fields, with these values and this one set of defaults (the culturemert preset's);
the command line offers exactly these values. docs/protocol.md says where each choice comes from.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args, get_type_hints

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

EmptyTags = Literal["exclude", "zero", "v1"]


@dataclass(config=ConfigDict(extra="forbid"), kw_only=True)
class ProbeChoices:
    """``batch_unit``: training batches of ``item``s with all their windows (v1) or of ``window``s;
    ``weighted_init``: the weighted sum's initial layer logits, ``randn`` (v1) or ``uniform``;
    ``selection``: a tagging configuration is selected on valid ``roc_auc`` (v1's monitor) or
    ``roc_auc_ap_mean`` (the MARBLE paper's tagging score; other task types select on their own metric);
    ``selection_scope``: ``per_seed`` or ``once`` (seed 0 chooses for all);
    ``empty_tags``: a tag without positives in a split is left out (``exclude``), scored 0 (``zero``,
    torchmetrics >= 1.4), or scored 0 for ROC-AUC and F1 with its AP left out (``v1``, what v1 printed)."""

    batch_unit: Literal["item", "window"] = "item"
    weighted_init: Literal["randn", "uniform"] = "randn"
    selection: Literal["roc_auc", "roc_auc_ap_mean"] = "roc_auc_ap_mean"
    selection_scope: Literal["per_seed", "once"] = "per_seed"
    empty_tags: EmptyTags = "exclude"


PROBE_FIELDS = tuple(field.name for field in dataclasses.fields(ProbeChoices))


def choice_values(name: str) -> tuple[str, ...]:
    """The values a probe choice may take (``choice_values("batch_unit")`` -> ("item", "window"))."""
    return get_args(get_type_hints(ProbeChoices)[name])
