"""Grafting efficient operators into pretrained Hugging Face transformers.

``python -m grafting.graft base=... plan=... out=...`` runs the whole recipe; ``grafting.load(DIR)``
reloads a grafted model as a ``transformers`` model (same forward signature, ``generate()``).
"""

import common  # noqa: F401  (quiets torch's import-time CUDA notice; see common/__init__.py)
from grafting.io import load, save
from grafting.plan import GraftPlan, load_plan, select_layers
from grafting.surgery import graft

__all__ = ["GraftPlan", "graft", "load", "load_plan", "save", "select_layers"]
