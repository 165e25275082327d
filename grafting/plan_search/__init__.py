"""Searching graft plans: which layers get which operator, on the fidelity-latency front.

``space`` (the graft space YAML), ``library`` (stage 1 once per (layer, candidate), plans
assembled from the pieces), ``judge`` (validation fidelity, relative latency), ``search``
(Optuna study, front, stage-2 finalization), ``report`` (table, CSV, plot); the command is
``python -m grafting.plan_search``.
"""
