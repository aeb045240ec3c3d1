"""The probe grid's progress: the shared rich bar (marble_eval.progress), fed by a Lightning callback."""

from __future__ import annotations

import lightning as L
from rich.progress import Progress


class ProbeProgress(L.Callback):
    """Advances the bar as probes stop; shows chunk, epoch and how many probes still train."""

    def __init__(self, progress: Progress, task_id: int, chunk: int, n_chunks: int) -> None:
        self.progress, self.task_id, self.chunk, self.n_chunks = progress, task_id, chunk, n_chunks
        self.started = 0

    def _describe(self, trainer: L.Trainer, active: int) -> str:
        return (f"probes: chunk {self.chunk}/{self.n_chunks} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                f" training {active}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = pl_module.n_active
        self.progress.update(self.task_id, description=self._describe(trainer, self.started))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.progress.update(self.task_id, description=self._describe(trainer, pl_module.n_active))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.progress.advance(self.task_id, self.started)
