"""The first objective of a plan search: fidelity of an assembled plan to the host on validation
text (text the report never evaluates on). The second, latency relative to the host, is the
grafting report's ``latency`` (alternating rounds of ``common.timing``, the core ``nas.latency``
uses) at ``search.seq_len``.

Fidelity is the grafting report's measure: for encoders the mean cosine between host and plan
sentence embeddings, averaged over short sentences and long passages (maximised); for decoders
the mean per-token KL(host || plan) on long windows (minimised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grafting.checkpoints import Host, embed
from grafting.report import decoder_fidelity


class Judge:
    """Scores plans against one host on fixed validation batches (teacher outputs computed
    once for encoders)."""

    def __init__(self, host: Host, validation: dict[str, list[dict[str, torch.Tensor]]]) -> None:
        self.host, self.validation = host, validation
        if host.is_encoder:
            self.name, self.direction = "cosine", "maximize"
            with torch.no_grad():
                self._teacher = {
                    k: [embed(host, host.model, b) for b in bs] for k, bs in validation.items()
                }
        else:  # the host's log-probabilities, once (a few hundred MB for a 49k vocabulary),
            # so each plan costs one forward, not two
            self.name, self.direction = "kl", "minimize"
            with torch.no_grad():
                self._teacher = {
                    k: [F.log_softmax(host.model(**b).logits.float(), -1) for b in bs]
                    for k, bs in validation.items()
                }

    @torch.no_grad()
    def fidelity(self, student: nn.Module) -> dict[str, float]:
        """``{self.name: value, <set>: value per validation set, ...}``."""
        parts: dict[str, float] = {}
        for name, batches in self.validation.items():
            if self.host.is_encoder:
                s = torch.cat([embed(self.host, student, b) for b in batches])
                t = torch.cat(self._teacher[name])
                parts[name] = float(F.cosine_similarity(t, s, dim=-1).mean())
            else:
                fid = decoder_fidelity(self.host.model, student, batches, self._teacher[name])
                parts[name], parts[f"{name}_ppl_ratio"] = fid["kl"], fid["ppl_ratio"]
        main = [v for k, v in parts.items() if k in self.validation]
        return {self.name: sum(main) / len(main), **parts}
