"""The plan search, end to end (``python -m grafting.plan_search``; settings in
``conf/graft_search.yaml``): load the host, build or reuse the stage-1 library, search plans
with Optuna on (validation fidelity, relative latency), write the front, finalize members with
stage 2 and the grafting report. Resumable: the library, the study (SQLite in ``out``) and every
finalized folder are reused by a re-run of the same command."""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from tqdm.auto import tqdm

from common.atomic import atomic_write_text
from grafting import stage2
from grafting.checkpoints import Host, load_host
from grafting.data import batches, passages, sample, sentences, token_windows
from grafting.io import save
from grafting.pipeline import (
    check_settings,
    check_text_settings,
    evaluate,
    prepare_tokenizer,
    text_sets,
)
from grafting.plan_search import library as lib
from grafting.plan_search.judge import Judge
from grafting.plan_search.space import (
    Choices,
    GraftSpace,
    baseline_choices,
    describe,
    load_space,
    param_name,
)
from grafting.report import latency
from search_spaces.checks import check_int, check_number, user_input
from search_spaces.cli import UsageError

# settings a resumed run must share with the run that made the folder
FIXED = ("base", "graft_space", "seed", "text", "stage1")


class Context:
    """What every step of a plan search needs: host, space, texts, library, judge, settings."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg, self.out = cfg, Path(cfg["out"])
        self.seed = int(cfg.get("seed", 0))
        self.progress = bool(cfg.get("progress", True))
        with user_input(f"graft_space={cfg['graft_space']}"):
            self.space: GraftSpace = load_space(cfg["graft_space"])
        with user_input(f"base={cfg['base']}"):
            self.host: Host = load_host(cfg["base"])
        self.host.model.requires_grad_(False)
        prepare_tokenizer(self.host)
        self.num_layers = self.host.family.num_layers(self.host.model)
        with user_input(f"graft_space={cfg['graft_space']}"):
            self.baselines = baseline_choices(self.space, self.num_layers)  # checks them early
        f = cfg["finalize"]
        for name in [
            *(f.get("baselines") or []),
            *([f["max_latency_of"]] if f.get("max_latency_of") else []),
        ]:
            if name not in self.baselines:
                raise UsageError(
                    f"finalize: {name!r} is not one of the space's baselines ({', '.join(self.baselines) or 'none'})"
                )
        with user_input("text"):
            self.texts = text_sets(self.host, cfg, self.seed)
        bs = int(cfg["text"]["batch_size"])
        tok, max_len = self.host.tokenizer, self.host.max_len
        self.calibration = batches(tok, self.texts["calibration"], bs, max_len)
        self.judge = Judge(self.host, self.validation_batches())
        self.seq_len = min(int(cfg["search"]["seq_len"]), max_len)

    def validation_batches(self) -> dict[str, list[dict[str, torch.Tensor]]]:
        s, t = self.cfg["search"], self.cfg["text"]
        tok, max_len, val = self.host.tokenizer, self.host.max_len, self.texts["validation"]
        if not val:
            raise UsageError("text.validation_fraction must be > 0 for a plan search")
        if not self.host.is_encoder:
            n = min(int(s["window_tokens"]), max_len)
            windows = token_windows(tok, val, n, int(s["validation_windows"]))
            if not windows:
                raise UsageError(
                    f"search.window_tokens: the validation text has fewer than {n} tokens"
                )
            return {"windows": windows}
        lo, hi = (min(int(v), max_len) for v in t["passage_tokens"])
        sets = {
            "sentences": sample(sentences(val), int(s["validation_sentences"]), self.seed + 2),
            "passages": sample(
                passages(tok, val, lo, hi), int(s["validation_passages"]), self.seed + 2
            ),
        }
        bs = int(self.cfg["report"]["batch_size"])
        return {k: batches(tok, v, bs, max_len) for k, v in sets.items() if v}


def check_search_settings(cfg: dict[str, Any]) -> None:
    """Every setting of a plan search (the graft's and ``search``/``finalize``), checked before
    ``out`` is touched or the host is loaded."""
    check_settings(cfg)
    check_text_settings(cfg)
    s, f = cfg["search"], cfg["finalize"]
    for name in ("trials", "seq_len", "window_tokens", "validation_windows", "repeats"):
        check_int(f"search.{name}", s[name])
    for name in ("validation_sentences", "validation_passages"):
        check_int(f"search.{name}", s[name], minimum=0)
    check_number("search.min_run_time", s["min_run_time"], above=0)
    check_int("finalize.k", f["k"], minimum=0)
    for n in f.get("trials") or []:
        check_int("finalize.trials[]", n, minimum=0)


def fixed_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a resumed search must share with the run that made the folder: the host, space,
    texts, stage 1 and how plans are scored (``search.trials`` may grow)."""
    search = {k: v for k, v in (cfg.get("search") or {}).items() if k != "trials"}
    return {k: cfg.get(k) for k in FIXED} | {"search": search}


OUTPUTS = (
    "study.db",
    "library",
    "finalized",
    "plans",
    ".logs",
    "front.csv",
    "pareto.png",
    "report.json",
)


def check_out(cfg: dict[str, Any]) -> None:
    """A new or empty ``out``, or one made by the same search (then it resumes); with
    ``overwrite=true`` what an earlier search wrote there is removed first."""
    out = Path(cfg["out"])
    saved = out / "config.yaml"
    if not out.exists() or not any(out.iterdir()):
        return
    if not saved.is_file():
        if cfg.get("overwrite"):
            return
        raise FileExistsError(f"out {str(out)!r} exists and is not a plan-search folder")
    old, new = fixed_settings(yaml.safe_load(saved.read_text()) or {}), fixed_settings(cfg)
    diff = [k for k in new if old.get(k) != new[k]]
    if diff and not cfg.get("overwrite"):
        raise FileExistsError(
            f"out {str(out)!r} holds a search with other {diff[0]} settings; choose another out= "
            "or set overwrite=true to start again"
        )
    if diff:  # overwrite: start again, removing only what this command writes
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def get_library(ctx: Context) -> lib.Library:
    path = ctx.out / "library"
    if (path / lib.META).is_file():
        with user_input(f"out={ctx.out}"):
            return lib.load(path, ctx.space, ctx.host)
    if ctx.progress:
        pieces = sum(len(c) for c in ctx.space.candidates.values()) * len(
            ctx.space.layer_ids(ctx.num_layers)
        )
        print(f"stage-1 library: {pieces} pieces ({ctx.space.name}), trained once", flush=True)
    built = lib.build(
        ctx.host,
        ctx.space,
        ctx.calibration,
        dict(ctx.cfg["stage1"]),
        progress=ctx.progress,
        seed=ctx.seed,
    )
    lib.save(built, path)
    return built


def evaluate_plan(ctx: Context, library: lib.Library, choices: Choices) -> dict[str, Any]:
    """Validation fidelity and measured latency (plan / host) of the assembled plan."""
    student, _, _ = lib.assemble(ctx.host, ctx.space, library, choices, "candidate")
    s = ctx.cfg["search"]
    row = latency(
        ctx.host.model,
        student,
        [ctx.seq_len],
        int(ctx.host.model.config.vocab_size),
        rounds=int(s["repeats"]),
        min_run_time=float(s["min_run_time"]),
    )[0]
    return {"fidelity": ctx.judge.fidelity(student), "latency": row}


def open_study(ctx: Context) -> optuna.Study:
    optuna.logging.set_verbosity(logging.WARNING)  # the table says what happened
    storage = f"sqlite:///{(ctx.out / 'study.db').resolve()}"
    sampler = optuna.samplers.TPESampler(seed=int(ctx.cfg["search"]["seed"]))
    study = optuna.create_study(
        storage=storage,
        study_name=f"graft-{ctx.space.name}",
        directions=[ctx.judge.direction, "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )
    with warnings.catch_warnings():  # experimental since 3.2, and what the dashboard shows
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([f"validation {ctx.judge.name}", "latency / host"])
    queued = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
    for name, choices in ctx.baselines.items():
        if name not in queued:
            params = {param_name(k): c for k, c in choices.items()}
            study.enqueue_trial(params, user_attrs={"baseline": name})
    return study


def search(ctx: Context, library: lib.Library) -> optuna.Study:
    """Run trials until ``search.trials`` distinct plans are scored. The sampler may propose a
    plan again (TPE over categorical choices often does): such a trial is given the plan's
    numbers without work and does not count. A trial that raises at run time (a NaN, out of
    memory) is recorded as failed with its reason and the search goes on."""
    study = open_study(ctx)
    keys = ctx.space.keys(ctx.num_layers)
    seen: dict[str, tuple[float, float]] = {
        describe(choices_from(ctx, t.params)): tuple(t.values)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    target = int(ctx.cfg["search"]["trials"])
    bar = tqdm(total=target, initial=min(len(seen), target), desc="plans", disable=not ctx.progress)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        choices = {
            k: trial.suggest_categorical(param_name(k), ctx.space.options(k[1])) for k in keys
        }
        trial.set_constraint("replaced", ctx.space.violation(choices))
        text = describe(choices)
        trial.set_user_attr("plan", text)
        if text in seen:  # the same plan again: same pieces, same numbers
            trial.set_user_attr("repeat", True)
            return seen[text]
        result = evaluate_plan(ctx, library, choices)
        for k, v in result["fidelity"].items():
            trial.set_user_attr(f"val_{k}", v)
        lat = result["latency"]
        trial.set_user_attr("latency_ms", lat["grafted_ms"])
        trial.set_user_attr("host_ms", lat["host_ms"])
        values = (result["fidelity"][ctx.judge.name], lat["grafted_ms"] / lat["host_ms"])
        seen[text] = values
        bar.update()
        return values

    def stop(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if len(seen) >= target:
            study.stop()

    if len(seen) < target:  # at most 5 proposals per plan still wanted, repeats included
        study.optimize(
            objective, n_trials=5 * (target - len(seen)), callbacks=[stop], catch=(RuntimeError,)
        )
    bar.close()
    return study


def choices_from(ctx: Context, params: dict[str, str]) -> Choices:
    return {k: params[param_name(k)] for k in ctx.space.keys(ctx.num_layers)}


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible Pareto-optimal trials, one per plan (the first trial of each), by latency."""
    firsts: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.best_trials:
        if all(v <= 0 for v in (t.constraints or {}).values()):
            firsts.setdefault(t.user_attrs["plan"], t)
    return sorted(firsts.values(), key=lambda t: (t.values[1], t.number))


def chosen(ctx: Context, study: optuna.Study, members: list[optuna.trial.FrozenTrial]) -> list[int]:
    """Trial numbers to finalize: the ``finalize.k`` best-fidelity front members no slower than
    ``finalize.max_latency_of``'s baseline, the named baselines, and ``finalize.trials``."""
    f = ctx.cfg["finalize"]
    sign = -1 if ctx.judge.direction == "maximize" else 1
    by_name = {t.user_attrs.get("baseline"): t for t in study.get_trials(deepcopy=False)}
    pool = members
    limit = f.get("max_latency_of")
    if limit:
        if limit not in by_name or by_name[limit].values is None:
            raise UsageError(f"finalize.max_latency_of={limit!r} is not a finished baseline")
        pool = [t for t in members if t.values[1] <= by_name[limit].values[1]]
    picks = [t.number for t in sorted(pool, key=lambda t: sign * t.values[0])[: int(f["k"])]]
    for name in f.get("baselines") or []:
        if name not in by_name:
            raise UsageError(f"finalize.baselines: {name!r} is not one of the space's baselines")
        picks.append(by_name[name].number)
    picks += [int(n) for n in f.get("trials") or []]
    return list(dict.fromkeys(picks))


def finalize(ctx: Context, library: lib.Library, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Stage 2 on the assembled plan of ``trial``, then the grafting report; saved as a graft
    folder (``grafting.load`` reads it) under ``finalized/``; an existing folder is reused."""
    name = trial.user_attrs.get("baseline") or f"trial_{trial.number:04d}"
    out = ctx.out / "finalized" / name
    if (out / "report.json").is_file() and (out / "config.yaml").is_file():
        old = yaml.safe_load((out / "config.yaml").read_text()) or {}
        if all(old.get(k) == ctx.cfg.get(k) for k in ("stage2", "report")):  # else: redo it
            return json.loads((out / "report.json").read_text())
    start = time.perf_counter()
    choices = choices_from(ctx, trial.params)
    student, wrappers, plan = lib.assemble(ctx.host, ctx.space, library, choices, name)
    shutil.rmtree(ctx.out / ".logs" / name, ignore_errors=True)  # an earlier finalization's
    result = stage2.train(
        ctx.host,
        student,
        ctx.host.model,
        list(wrappers.values()),
        ctx.calibration,
        dict(ctx.cfg["stage2"]),
        ctx.out / ".logs" / name,
        progress=ctx.progress,
    )
    report = evaluate(ctx.host, ctx.host.model, student, ctx.texts, ctx.cfg)
    report["validation"] = {  # the search's own measure, before and after stage 2
        "stage1": trial.values[0],
        "stage2": ctx.judge.fidelity(student)[ctx.judge.name],
    }
    report.update(
        base=str(ctx.cfg["base"]),
        plan=name,
        family=ctx.host.family.name,
        trial=trial.number,
        choices=describe(choices),
        stage2=result,
        seconds={"stage2+report": time.perf_counter() - start},
    )
    save(
        out,
        student,
        plan,
        tokenizer=ctx.host.tokenizer,
        host_path=ctx.host.path,
        run_config=ctx.cfg,
        report=report,
        overwrite=True,
    )
    return report


def write_plans(ctx: Context, trials: list[optuna.trial.FrozenTrial]) -> dict[int, Path]:
    """``plans/<name>.yaml`` for each trial: a plan ``python -m grafting.graft plan=FILE`` takes."""
    paths = {}
    for t in trials:
        name = t.user_attrs.get("baseline") or f"trial_{t.number:04d}"
        plan = ctx.space.plan(choices_from(ctx, t.params), name)
        data = {
            "name": name,
            "description": f"plan search {ctx.space.name} trial {t.number}: {t.user_attrs['plan']}",
            "grafts": plan.to_dict()["grafts"],
        }
        path = ctx.out / "plans" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
        paths[t.number] = path
    return paths
