"""``python -m grafting.export run=GRAFT_OUT out=DIR [onnx.shape=[B,L]] [onnx.dynamic=false]``

Turns a grafted model (the folder ``python -m grafting.graft`` writes) into a standalone folder:
``grafted.safetensors`` (the grafted weights; not ``model.safetensors``, so that
``transformers.AutoModel.from_pretrained`` refuses the folder instead of loading the host
architecture with half its weights), ``config.json`` (the host's Hugging Face config),
``plan.yaml``, ``graft_config.yaml`` (the graft's resolved configuration), ``report.json``, the
tokenizer (and sentence-transformers pooling files), ``model.onnx`` (the forward on
``input_ids`` + ``attention_mask``, checked against PyTorch with onnxruntime),
``reference.safetensors`` (inputs and PyTorch's outputs), ``export.json`` (every number) and
``README.md`` (the model card). ``grafting.load(DIR)`` reloads it as a ``transformers`` model.

Everything is written into a temporary folder beside ``DIR`` and renamed into place at the end,
so a failed export leaves nothing behind and never replaces an existing folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from common.atomic import atomic_dir
from common.export_folder import CARD, RECORD, REFERENCE, check_out, write_record, write_reference
from search_spaces.checks import check_int, parse_shape
from search_spaces.cli import UsageError, import_modules, import_plugins, run_cli
from search_spaces.registry import plugin_modules

SOURCE_WEIGHTS = (
    "grafted.safetensors",
    "model.safetensors",
)  # a graft run or export (or an older export)
WEIGHTS = "grafted.safetensors"
RENAMED = {"model.safetensors": WEIGHTS, "config.yaml": "graft_config.yaml"}
NOT_COPIED = {"model.onnx", REFERENCE, RECORD, CARD}  # rewritten by every export


def check_run(run: Any) -> Path:
    """The graft folder named by ``run=``; ``UsageError`` if it is not one."""
    if not run:
        raise UsageError("give run=GRAFT_OUT (a folder written by python -m grafting.graft)")
    path = Path(str(run)).expanduser()
    if not path.is_dir():
        raise UsageError(f"run={run}: no such directory")
    if not any((path / w).is_file() for w in SOURCE_WEIGHTS) or not (path / "plan.yaml").is_file():
        raise UsageError(
            f"run={run}: not a grafted model folder (needs grafted.safetensors and plan.yaml)"
        )
    return path


def check_shape(shape: Any, max_len: int) -> tuple[tuple[int, int], list[str]]:
    """``onnx.shape`` as ``(batch, length)``, the length capped at the model's maximum."""
    batch, length = parse_shape("onnx.shape", shape)
    if length > max_len:
        return (batch, max_len), [f"length {length} capped at the model's maximum {max_len}"]
    return (batch, length), []


def load_grafted(run: Path) -> Any:
    """``grafting.load(run)``; any failure (family, config, weights) becomes a ``UsageError``."""
    import grafting

    try:
        return grafting.load(run)
    except Exception as e:  # noqa: BLE001  (transformers and safetensors raise many types)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"run={run}: cannot load the grafted model: {first}") from None


def copy_files(run: Path, dest: Path) -> None:
    """The graft folder's files (an older export's weights and the configuration renamed, see ``RENAMED``) and the
    sentence-transformers module folders named in ``modules.json``."""
    for p in sorted(run.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name not in NOT_COPIED:
            shutil.copy2(p, dest / RENAMED.get(p.name, p.name))
    modules = run / "modules.json"
    for m in json.loads(modules.read_text()) if modules.is_file() else []:
        sub = run / str(m.get("path") or "")
        if m.get("path") and sub.is_dir():
            shutil.copytree(sub, dest / m["path"])


def describe(model: Any, run: Path, report: dict | None, graft_cfg: dict | None) -> dict[str, Any]:
    """The host, the plan and every grafted (layer, slot) with the operator's hyperparameters."""
    from grafting.checkpoints import sentence_pooling
    from grafting.families import get_family
    from grafting.plan import load_plan
    from grafting.report import count_params
    from grafting.surgery import op_kwargs, op_name

    config, family = model.config, get_family(model.config)
    plan = load_plan(run / "plan.yaml")
    n = len(family.layers(model))
    base = (report or {}).get("base") or (graft_cfg or {}).get("base") or run.name
    pooling, normalize = sentence_pooling(run)
    grafted = [
        {
            "layer": i,
            "slot": slot,
            "op": op_name(family, config, slot, spec),
            "hparams": op_kwargs(family, config, slot, spec),
            "init": spec.init,
        }
        for (i, slot), spec in plan.resolve(n).items()
    ]
    params = dict((report or {}).get("params") or {})
    params["grafted"] = count_params(model)
    host = {
        "base": str(base),
        "family": family.name,
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "causal": family.causal,
        "layers": n,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "max_len": int(getattr(config, "max_position_embeddings", None) or config.n_positions),
        "pooling": pooling,
        "normalize": normalize,
        "pooling_files": (run / "modules.json").is_file(),
    }
    plugins = plugin_modules({g["op"] for g in grafted})  # what to import before grafting.load
    return {
        "host": host,
        "plan": plan.to_dict(),
        "grafted": grafted,
        "params": params,
        "plugins": plugins,
    }


def write_folder(
    dest: Path, run: Path, model: Any, cfg: DictConfig, command: str
) -> dict[str, Any]:
    """Write every file of the export into ``dest`` (created if needed) and return the record."""
    import onnxruntime
    import transformers

    from common.portable import ONNX_FILE
    from grafting.model_card import model_card
    from grafting.portable import HFForward, make_inputs, write_onnx

    dest.mkdir(parents=True, exist_ok=True)
    copy_files(run, dest)
    report = _json(run / "report.json")
    graft_cfg = _yaml(run / "config.yaml") or _yaml(run / "graft_config.yaml")
    info = {
        "run": str(run.resolve()),
        "command": command,
        **describe(model, run, report, graft_cfg),
    }
    info["graft"] = graft_cfg
    host = info["host"]
    shape, notes = check_shape(cfg.onnx.shape, host["max_len"])
    info["onnx"] = None
    if cfg.onnx.enabled:
        try:
            onnx = write_onnx(
                model,
                host["causal"],
                dest / ONNX_FILE,
                shape=shape,
                vocab_size=host["vocab_size"],
                dynamic=bool(cfg.onnx.dynamic),
                seed=int(cfg.seed),
            )
        except ValueError as e:
            ops = sorted({g["op"] for g in info["grafted"]})
            raise UsageError(
                f"cannot export the {host['family']} model grafted with {', '.join(ops)} to ONNX: {e} (export without it: onnx.enabled=false)"
            ) from None
        onnx.notes = notes + onnx.notes
        info["onnx"] = onnx.to_dict()
    ref = make_inputs(shape, host["vocab_size"], int(cfg.seed) + 1, pad=shape[1] // 4)
    write_reference(dest, HFForward(model, host["causal"]), ref)
    info.update(
        reference={
            "shape": list(shape),
            "output": "logits" if host["causal"] else "last_hidden_state",
        },
        report=report,
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )
    return write_record(dest, info, model_card)


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e})") from None


def _yaml(path: Path) -> dict | None:
    import yaml

    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0]
        raise UsageError(f"{path}: not valid YAML ({first})") from None


def run_plugins(run: Path) -> list[str]:
    """The ``plugins`` the graft in ``run`` was made with (its ``config.yaml``), so that an
    export needs no ``plugins=`` to rebuild the operators the graft itself imported."""
    graft_cfg = _yaml(run / "config.yaml") or {}
    plugins = graft_cfg.get("plugins") if isinstance(graft_cfg, dict) else None
    if plugins is None:
        return []
    if not isinstance(plugins, list) or not all(isinstance(m, str) for m in plugins):
        raise UsageError(f"{run / 'config.yaml'}: field `plugins`: expected a list of module names")
    return plugins


def export(cfg: DictConfig, argv: Sequence[str] = ()) -> int:
    import_plugins(cfg)
    check_int("threads", cfg.threads, optional=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run = check_run(cfg.run)
    import_modules(run_plugins(run))
    out = check_out(
        cfg.out, overwrite=cfg.overwrite, source=run, source_name="graft folder", error=UsageError
    )
    check_shape(cfg.onnx.shape, sys.maxsize)  # before any work
    model = load_grafted(run)
    command = " ".join(["python -m grafting.export", *argv])
    if type(model).__name__ == "DiT":
        from grafting.dit.export import write_folder as write_dit_folder

        with atomic_dir(out) as tmp:
            try:
                info = write_dit_folder(tmp, run, model, cfg, command)
            except ValueError as e:
                raise UsageError(f"{e} (export without it: onnx.enabled=false)") from None
        print(f"exported {info['host']['base']} grafted with {info['plan']['name']} to {out}")
        return 0
    with atomic_dir(out) as tmp:
        info = write_folder(tmp, run, model, cfg, command)
    onnx = info["onnx"]
    summary = (
        "no ONNX"
        if onnx is None
        else (
            f"ONNX at {list(onnx['shape'])}, dynamic: {'/'.join(onnx['dynamic_axes'].values()) or 'none'}, "
            f"max abs diff {onnx['onnx_max_abs_diff']:.2g}"
        )
    )
    print(
        f"exported {info['host']['base']} grafted with {info['plan']['name']} to {out} ({summary})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(lambda cfg: export(cfg, argv), "graft_export", argv)


if __name__ == "__main__":
    sys.exit(main())
