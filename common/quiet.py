"""Quiet Lightning: what it prints that a user can do nothing about, filtered narrowly."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Lightning's notices that say nothing the user can act on (no GPU here is the expected case)
NOISE = ("litlogger", "GPU available:", "TPU available:", "`Trainer.fit` stopped")


def _no_noise(record: logging.LogRecord) -> bool:
    return not any(n in record.getMessage() for n in NOISE)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence, inside the block: Lightning's litlogger advertisement (printed whenever no
    LitLogger is used) and hardware lines, torch's deprecation of a class that Lightning still
    uses, a note on checkpointing with manual optimisation (the state after a step is exactly what
    a resume needs), and the note on modules in eval mode (distillation keeps them there on
    purpose: no dropout against a deterministic teacher)."""
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
        warnings.filterwarnings("ignore", "Using ModelCheckpoint with manual optimization")
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
        tips.addFilter(_no_noise)
        try:
            yield
        finally:
            tips.removeFilter(_no_noise)
