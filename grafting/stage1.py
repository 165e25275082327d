"""Stage 1: every grafted operator regresses the output of the module it replaced.

Hooks on the frozen teacher capture each replaced module's input and output on calibration
text; the pairs are cached to disk (safetensors, one file per batch) and every new operator is
then trained on them independently, all of them in one pass over the cache (the recipe of
"Exploring Diffusion Transformer Designs via Grafting", Chandrasegaran et al. 2025).
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from common.atomic import process_tag, sweep_stale
from common.schedule import warmup_cosine, warmup_fraction
from grafting.families.base import SLOTS, Family, first_input

LOSSES = ("l1", "l2", "huber")


def key_name(key: tuple) -> str:
    """The cached activations of a (layer, slot, ...) key: ``"<layer>.<slot>"``."""
    return f"{key[0]}.{key[1]}"


def key_label(key: tuple) -> str:
    """A wrapper's name in the loss history: ``"3.mixer"``, or ``"3.mixer.linear"`` for a
    graft-library piece (several candidates regress the same cached activations)."""
    return ".".join(str(k) for k in key)


@torch.no_grad()
def capture(
    teacher: nn.Module,
    family: Family,
    keys: list[tuple[int, str]],
    batches: list[dict[str, torch.Tensor]],
    cache_dir: Path,
    *,
    progress: bool = False,
) -> list[Path]:
    """Run ``teacher(**batch)`` on ``batches``; write each batch's ``attention_mask`` (all ones
    when the batch has none) and, per grafted (layer, slot), the replaced module's input
    ``<layer>.<slot>.x`` and output ``.y``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    layers = family.layers(teacher)
    store: dict[str, torch.Tensor] = {}
    handles = []
    for key in keys:
        src, dst = family.capture(layers[key[0]], key[1])
        name = key_name(key)

        def grab_in(module, args, kwargs, name=name):
            store[f"{name}.x"] = first_input(args, kwargs).detach().contiguous()

        def grab_out(module, args, output, name=name):
            y = output[0] if isinstance(output, tuple) else output
            store[f"{name}.y"] = y.detach().contiguous()

        handles.append(src.register_forward_pre_hook(grab_in, with_kwargs=True))
        handles.append(dst.register_forward_hook(grab_out))
    files = []
    try:
        bar = tqdm(batches, desc="stage 1: teacher activations", leave=False, disable=not progress)
        for i, batch in enumerate(bar):
            store.clear()
            # the trunk only: a decoder's LM head would add (B, L, vocab) logits nobody reads
            getattr(teacher, "base_model", teacher)(**batch)
            if "attention_mask" in batch:
                store["attention_mask"] = batch["attention_mask"].contiguous()
            else:  # no padding (image tokens): every token is real
                x = store[f"{key_name(keys[0])}.x"]
                store["attention_mask"] = torch.ones(x.shape[:2], dtype=torch.long)
            path = cache_dir / f"batch_{i:05d}.safetensors"
            save_file(unshared(store), str(path))
            files.append(path)
    finally:
        for h in handles:
            h.remove()
    return files


def unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with every tensor that shares memory with an earlier one copied (one layer's
    mixer output is its MLP's input; safetensors stores no shared memory)."""
    seen, out = set(), {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def regression_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
    """Mean ``l1|l2|huber`` error over real tokens (``mask`` True), averaged over features."""
    if kind not in LOSSES:
        raise ValueError(f"stage1.loss must be one of {LOSSES}, but got {kind!r}")
    fn = {"l1": F.l1_loss, "l2": F.mse_loss, "huber": F.smooth_l1_loss}[kind]
    return fn(pred[mask], target[mask])


def slot_losses(loss: str | dict[str, str]) -> dict[str, str]:
    """The loss of each slot: one name for both, or ``{mixer: l1, mlp: l2}`` (the DiT grafting
    paper's ablation found L1 best for attention and L2 for MLPs)."""
    per_slot = dict(loss) if isinstance(loss, dict) else dict.fromkeys(SLOTS, loss)
    if set(per_slot) != set(SLOTS):
        raise ValueError(f"stage1.loss must name every slot {SLOTS} once, but got {loss!r}")
    for kind in per_slot.values():
        if kind not in LOSSES:
            raise ValueError(f"stage1.loss must be one of {LOSSES}, but got {kind!r}")
    return per_slot


def visit_order(n_files: int, steps: int, seed: int) -> list[int]:
    """``steps`` cache indices: whole passes over ``n_files``, each pass freshly shuffled."""
    rng, order = random.Random(seed), []
    while len(order) < steps:
        order += rng.sample(range(n_files), n_files)
    return order[:steps]


def train(
    wrappers: dict[tuple, nn.Module],
    files: list[Path],
    *,
    steps: int,
    lr: float,
    loss: str | dict[str, str] = "l2",
    weight_decay: float = 0.0,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Train every wrapper's ``core`` to map cached inputs to cached outputs, ``steps`` batches
    in total (passes over the cache, each in its own seeded random order: the cache is sorted by
    length, so a fixed order would end every pass on the longest batches); the layers' losses are
    summed but independent (each sees only its own teacher input, AdamW is per parameter and each
    operator's gradient is clipped on its own), so an operator trained beside others gets the
    weights it would get alone (what a graft library relies on); ``loss`` is one kind or one
    per slot (``slot_losses``). Returns per-slot first/last
    losses and the time taken."""
    losses = slot_losses(loss)
    start = time.perf_counter()
    groups = [[p for p in w.parameters() if p.requires_grad] for w in wrappers.values()]
    groups = [g for g in groups if g]
    params = [p for g in groups for p in g]
    history: dict[str, list[float]] = {key_label(k): [] for k in wrappers}
    if steps <= 0 or not params:
        return {"steps": 0, "seconds": 0.0, "loss": {}}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = warmup_fraction(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, warmup, steps, floor=0.0)
    )
    # modules stay in eval mode: dropout would only add noise to a regression onto a teacher
    bar = tqdm(
        visit_order(len(files), steps, seed),
        desc="stage 1",
        total=steps,
        leave=False,
        disable=not progress,
    )
    for index in bar:
        data = load_file(str(files[index]))
        mask = data["attention_mask"].bool()
        pm = None if bool(mask.all()) else mask
        positions = torch.arange(mask.shape[1])[None]
        total = 0.0
        opt.zero_grad(set_to_none=True)
        for key, wrapper in wrappers.items():
            name = key_name(key)
            pred = wrapper.core(data[f"{name}.x"], pm, positions)
            err = regression_loss(losses[key[1]], pred, data[f"{name}.y"], mask)
            err.backward()  # one operator's graph at a time: the memory of one, not of all
            history[key_label(key)].append(err.item())
            total += err.item()
        for group in groups:  # clipped one operator at a time, so none slows another
            torch.nn.utils.clip_grad_norm_(group, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{total / len(wrappers):.3g}")
    window = max(1, min(10, steps // 5))
    summary = {
        name: {"first": h[0], "last": sum(h[-window:]) / len(h[-window:])}
        for name, h in history.items()
    }
    return {"steps": steps, "seconds": time.perf_counter() - start, "loss": summary}


def run(
    teacher: nn.Module,
    family: Family,
    wrappers: dict[tuple, nn.Module],
    batches: list[dict[str, torch.Tensor]],
    cfg: dict[str, Any],
    progress: bool,
    seed: int,
) -> tuple[dict[str, Any], float]:
    """The whole of stage 1 per the ``stage1`` settings ``cfg``: capture into ``cfg.cache_dir``
    (default: a temporary folder, removed afterwards), then train; returns (result, seconds).
    Keys are (layer, slot) or, for a graft library, (layer, slot, candidate): each (layer, slot)
    is captured once, whatever the number of candidates trained on it."""
    start = time.perf_counter()
    sweep_stale(tempfile.gettempdir(), "graft-cache-")  # what killed grafts left
    with tempfile.TemporaryDirectory(prefix=f"graft-cache-{process_tag()}.") as tmp:
        cache = Path(cfg.get("cache_dir") or tmp)
        keys = list(dict.fromkeys((k[0], k[1]) for k in wrappers))
        files = capture(teacher, family, keys, batches, cache, progress=progress)
        result = train(
            wrappers,
            files,
            steps=int(cfg["steps"]),
            lr=float(cfg["lr"]),
            loss=cfg["loss"],
            progress=progress,
            seed=seed,
        )
    return result, time.perf_counter() - start
