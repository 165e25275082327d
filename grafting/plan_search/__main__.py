"""``python -m grafting.plan_search base=PRESET_OR_DIR graft_space=NAME_OR_FILE out=DIR``

Builds the stage-1 library of the graft space, searches plans with Optuna on validation fidelity
and measured latency relative to the host, writes the front (``front.csv``, ``pareto.png``,
``plans/*.yaml``), runs stage 2 on the chosen members (``finalized/``) and prints the table.
See ``conf/graft_search.yaml`` for every setting."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from search_spaces.cli import UsageError, import_plugins, run_cli


def run(config: dict) -> dict:
    """The whole search per ``config``; returns the report (also ``out/report.json``)."""
    from common.atomic import atomic_write_text
    from grafting.plan_search import report as rep
    from grafting.plan_search import search as s

    times: dict[str, float] = {}
    s.check_search_settings(config)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(int(config.get("seed", 0)))
    try:
        s.check_out(config)
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    start = time.perf_counter()
    ctx = s.Context(config)
    ctx.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ctx.out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    times["load"] = time.perf_counter() - start

    start = time.perf_counter()
    library = s.get_library(ctx)
    times["library"] = time.perf_counter() - start
    start = time.perf_counter()
    study = s.search(ctx, library)
    times["search"] = time.perf_counter() - start

    members = s.front(study)
    picks = s.chosen(ctx, study, members)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    baselines = [t for t in by_number.values() if t.user_attrs.get("baseline") and t.values]
    plans = s.write_plans(ctx, [*members, *baselines])
    start = time.perf_counter()
    finalized = {}
    for n in picks:
        if n not in by_number or by_number[n].values is None:
            raise UsageError(f"finalize: trial {n} is not a finished trial of this study")
        if ctx.progress:
            print(
                f"finalize trial {n}: stage 2 + report ({by_number[n].user_attrs['plan']})",
                flush=True,
            )
        finalized[n] = s.finalize(ctx, library, by_number[n])
    times["finalize"] = time.perf_counter() - start

    rows = rep.rows(study, members, finalized, ctx.judge.name)
    rep.write_csv(ctx.out / "front.csv", rows)
    rep.plot(ctx.out / "pareto.png", study, members, ctx.judge.name)
    report = {
        "base": str(config["base"]),
        "graft_space": ctx.space.name,
        "space_size": ctx.space.size(ctx.num_layers),
        "fidelity": ctx.judge.name,
        "seq_len": ctx.seq_len,
        "plans": len({t.user_attrs["plan"] for t in by_number.values() if t.values}),
        "trials": len(by_number),
        "front": rows,
        "plan_files": {str(k): str(v) for k, v in plans.items()},
        "library": {k: library.meta[k] for k in ("seconds", "loss")},
        "seconds": times,
    }
    atomic_write_text(ctx.out / "report.json", json.dumps(report, indent=2) + "\n")
    report["table"] = rep.table(rows)
    return report


def main_cfg(cfg: DictConfig) -> int:
    import_plugins(cfg)
    report = run(OmegaConf.to_container(cfg, resolve=True))
    print(report["table"])
    t = report["seconds"]
    print(
        f"{report['plans']} plans of {report['space_size']:,} scored ({report['trials']} trials); "
        f"minutes: library "
        f"{t['library'] / 60:.1f}, search {t['search'] / 60:.1f}, finalize {t['finalize'] / 60:.1f}"
    )
    print(f"front, plans and finalized models in {cfg.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(main_cfg, "graft_search", argv)


if __name__ == "__main__":
    sys.exit(main())
