"""Probe recipes: one YAML per recipe under probes/, validated into ``ProbeRecipe``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from marble_eval.configs import STRICT, load_config, named_yaml, yaml_names
from marble_eval.paths import probes_dir
from marble_eval.probe_choices import PROBE_FIELDS, ProbeChoices


@dataclass(config=STRICT)
class PlateauSchedule:
    """ReduceLROnPlateau on the validation monitor (mode max); torch defaults for the rest."""

    factor: float = Field(default=0.5, gt=0, lt=1)
    patience: int = Field(default=3, ge=0)
    threshold: float = Field(default=1e-4, ge=0)  # relative, as torch's default threshold_mode "rel"


@dataclass(config=STRICT)
class EarlyStopping:
    """Stop a probe after ``patience`` validations without improvement larger than ``min_delta``."""

    patience: int = Field(default=10, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


@dataclass(config=STRICT, kw_only=True)
class ProbeRecipe(ProbeChoices):
    """How one probe is trained (PROTOCOL 3). ``head`` mlp: Linear-ReLU-Dropout-Linear; linear: Linear.
    ``monitor``: ``task``, the only value: early stopping, the LR schedule and the best-weights
    snapshot watch the task type's validation metric (``TaskType.monitor``: multilabel roc_auc,
    multiclass accuracy, regression r2, key key_score), as MARBLE v1 does per task.

    The protocol's open choices (fields, values and defaults: ``marble_eval.probe_choices``), in detail:
    - ``batch_unit``: ``item`` = each batch holds ``batch_size`` items with all their windows stacked
      (v1's train_collate_fn; BCE averaged over the batch's window rows); ``window`` = batches of
      ``batch_size`` windows, each window a sample.
    - ``weighted_init``: the weighted sum's initial layer logits: ``randn`` (v1's torch.randn layer
      weights, drawn per probe seed) or ``uniform`` (zeros: equal weights).
    - ``selection``: the validation score that picks a seed's configuration of a tagging task:
      ``roc_auc`` (v1's MONITOR) or ``roc_auc_ap_mean`` (the mean of ROC-AUC and AP, as the MARBLE
      paper ranks tagging results). Ties: higher AP, then grid order. Other task types select on
      their own metric (``TaskType.selection``: accuracy, r2, key_score).
    - ``selection_scope``: ``per_seed`` = each seed picks its own configuration on validation;
      ``once`` = seed 0 (the first seed) picks, then only that configuration is trained for the other
      seeds. v1 ran one seed, where both are the same; per_seed is the default.
    - ``empty_tags``: a tag without a positive (ROC-AUC: or without a negative) item in the evaluated
      split: ``zero`` = scored 0 and averaged in (v1 / torchmetrics), ``exclude`` = left out of the
      macro averages and named.
    """

    name: str
    version: str
    head: Literal["mlp", "linear"]
    description: str = ""
    hidden_dim: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    optimizer: Literal["adam"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=64, ge=1)
    max_epochs: int = Field(default=100, ge=1)
    monitor: Literal["task"] = "task"
    lr_schedule: PlateauSchedule = Field(default_factory=PlateauSchedule)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    restore_best: bool = True

    def protocol(self) -> dict[str, str]:
        """The open protocol choices as resolved for this recipe (recorded with every result)."""
        return {name: getattr(self, name) for name in PROBE_FIELDS}

    @model_validator(mode="after")
    def _head_fields(self) -> "ProbeRecipe":
        if self.head == "mlp" and self.hidden_dim is None:
            raise ValueError("head mlp needs hidden_dim (MARBLE: 512)")
        if self.head == "linear" and (self.hidden_dim is not None or self.dropout):
            raise ValueError("head linear takes no hidden_dim or dropout; remove them")
        return self


def known_recipes() -> list[str]:
    """Names of the recipe YAMLs in the probes folder."""
    return yaml_names(probes_dir())


def load_recipe(name_or_path: str | Path) -> ProbeRecipe:
    """A recipe by name (probes/<name>.yaml) or by path to a YAML file."""
    return load_config(ProbeRecipe, named_yaml(name_or_path, probes_dir(), "probe recipe", "known recipes"))
