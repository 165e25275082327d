"""The whole graft, from a config mapping (``conf/graft.yaml``): load the host, check the plan
against it, graft, stage 1, stage 2, report, save. ``python -m grafting.graft`` and the
benchmarks call ``run``."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from grafting import stage1, stage2
from grafting.checkpoints import Host, load_host, read_config, resolve_base
from grafting.data import (
    batches,
    check_source,
    passages,
    sample,
    sentences,
    source_texts,
    split_text,
    token_windows,
)
from grafting.families import get_family
from grafting.io import save
from grafting.plan import GraftPlan, load_plan
from grafting.report import (
    count_params,
    decode_throughput,
    decoder_fidelity,
    encoder_fidelity,
    generation_sample,
    latency,
)
from grafting.resume import ResumeDir
from grafting.surgery import graft
from search_spaces.checks import check_choice, check_int, check_number, parse_shape, user_input
from search_spaces.cli import UsageError


def check_settings(cfg: dict[str, Any], train_modes: Sequence[str] = stage2.TRAIN_MODES) -> None:
    """The settings every graft shares (threads, stage 1, stage 2), checked before the host is
    loaded: a bad one would otherwise stop the run after minutes, or be silently accepted."""
    check_int("threads", cfg.get("threads"), optional=True)
    s1, s2 = cfg["stage1"], cfg["stage2"]
    check_int("stage1.steps", s1["steps"], minimum=0)
    check_number("stage1.lr", s1["lr"], above=0)
    with user_input("stage1.loss"):
        stage1.slot_losses(s1["loss"])
    check_int("stage2.steps", s2["steps"], minimum=0)
    check_number("stage2.lr", s2["lr"], above=0)
    check_int("stage2.checkpoint_every", s2.get("checkpoint_every", 1))
    check_choice("stage2.train", s2.get("train", "grafted"), train_modes)


def check_text_settings(cfg: dict[str, Any]) -> None:
    """The ``text`` and ``report`` settings of a text host (``conf/graft.yaml``)."""
    t, r = cfg["text"], cfg["report"]
    check_number("text.eval_fraction", t["eval_fraction"], above=0, below=1)
    check_number("text.validation_fraction", t.get("validation_fraction", 0.0), at_least=0, below=1)
    for name in ("calib_sentences", "calib_passages"):
        check_int(f"text.{name}", t[name], minimum=0)
    check_int("text.batch_size", t["batch_size"])
    parse_shape("text.passage_tokens", t["passage_tokens"], length=None)
    for name in ("sentences", "passages", "windows", "sample_tokens", "decode_tokens"):
        check_int(f"report.{name}", r.get(name, 0), minimum=0)
    for name in ("batch_size", "rounds", "window_tokens"):
        check_int(f"report.{name}", r[name])
    check_number("report.min_run_time", r["min_run_time"], above=0)
    parse_shape("report.lengths", r["lengths"], length=None)
    check_source(str(t["source"]))
    if r.get("ood_source"):
        with user_input("report.ood_source"):
            check_source(str(r["ood_source"]))


def text_sets(host: Host, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Calibration texts and held-out evaluation sentences and passages (disjoint sources), and,
    with ``report.ood_source``, sentences and passages of another domain (none of it calibrates);
    with ``text.validation_fraction`` (a plan search), validation paragraphs that are neither."""
    t, r = cfg["text"], cfg["report"]
    split = split_text(
        str(t["source"]), float(t["eval_fraction"]), float(t.get("validation_fraction", 0.0))
    )
    lo, hi = (int(v) for v in t["passage_tokens"])
    hi = min(hi, host.max_len)
    lo = min(lo, hi)
    tok = host.tokenizer
    out: dict[str, Any] = {
        "calibration": sample(sentences(split.calibration), int(t["calib_sentences"]), seed)
        + sample(passages(tok, split.calibration, lo, hi), int(t["calib_passages"]), seed),
        "sentences": sample(sentences(split.evaluation), int(r["sentences"]), seed + 1),
        "passages": sample(passages(tok, split.evaluation, lo, hi), int(r["passages"]), seed + 1),
        "sources": split.sources,
        "evaluation": split.evaluation,
        "validation": split.validation,
    }
    if r.get("ood_source"):
        ood = [p for _, paras in source_texts(str(r["ood_source"])) for p in paras]
        out["ood_sentences"] = sample(sentences(ood), int(r["sentences"]), seed + 1)
        out["ood_passages"] = sample(passages(tok, ood, lo, hi), int(r["passages"]), seed + 1)
        out["ood"] = ood
    return out


def prepare_tokenizer(host: Host) -> None:
    tok = host.tokenizer
    tok.padding_side = "right"  # grafted operators take positions 0..L-1 in stage 1
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token


def read_plan(name_or_path: Any) -> GraftPlan:
    """The plan the ``plan=`` setting names; any problem is a ``UsageError`` naming it."""
    with user_input(f"plan={name_or_path}"):
        return load_plan(name_or_path)


DEFAULT_PLANS = {False: "linear_50", True: "hybrid_swa_linear_50"}  # by host: encoder, decoder


def default_plan(base: Any) -> str:
    """The plan ``plan=null`` means for ``base``: ``linear_50`` for an encoder (the cheapest plan
    that meets its targets on all-MiniLM-L6-v2 in domain) and ``hybrid_swa_linear_50`` for a
    decoder (the most quality recovered per CPU-minute on SmolLM2-135M); the numbers behind
    both: BENCHMARKS.md ``graft_minilm`` and ``graft_llm``."""
    with user_input(f"base={base}"):
        family = get_family(read_config(resolve_base(base)))
    return DEFAULT_PLANS[bool(family.causal)]


def default_out(cfg: dict[str, Any]) -> Path:
    name = Path(str(cfg["plan"])).stem
    return Path(cfg.get("out") or f"runs/graft-{name}")


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Graft per ``cfg``; returns the report (also written to ``out/report.json``). (DiT hosts:
    ``grafting.dit.graft.run_dit``.)"""
    times: dict[str, float] = {}
    seed = int(cfg.get("seed", 0))
    check_settings(cfg)
    check_text_settings(cfg)
    if cfg.get("plan") is None:
        cfg["plan"] = default_plan(cfg["base"])
    torch.manual_seed(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    out = default_out(cfg)
    if out.exists() and any(out.iterdir()) and not cfg.get("overwrite"):
        raise FileExistsError(f"out {str(out)!r} exists and is not empty (set overwrite=true)")
    progress = bool(cfg.get("progress", True))

    start = time.perf_counter()
    plan = read_plan(cfg["plan"])
    if plan.restructure:
        raise UsageError(f"plan {plan.name!r}: restructure={plan.restructure} is for DiT hosts")
    with user_input(f"base={cfg['base']}"):
        host = load_host(cfg["base"])
    teacher = host.model.requires_grad_(False)
    student = copy.deepcopy(teacher)
    with user_input(f"plan={cfg['plan']}"):
        wrappers = graft(student, host.family, plan)  # validates the whole plan before changing
    prepare_tokenizer(host)
    with user_input("text"):
        texts = text_sets(host, cfg, seed)
    bs = int(cfg["text"]["batch_size"])
    calib = batches(host.tokenizer, texts["calibration"], bs, host.max_len)
    times["load"] = time.perf_counter() - start

    resume = ResumeDir(out, cfg)
    result1 = resume.load_stage1(wrappers) if resume.open() else None
    if result1 is None:
        s1 = dict(cfg["stage1"])
        result1, times["stage1"] = stage1.run(
            teacher, host.family, wrappers, calib, s1, progress, seed
        )
        resume.save_stage1(wrappers, result1)
    else:
        times["stage1"] = 0.0
        if progress:
            print(f"stage 1: reusing its result in {resume.path}", flush=True)

    start = time.perf_counter()
    torch.manual_seed(seed + 1)  # stage 2 starts from the same state whether stage 1 ran or not
    result2 = stage2.train(
        host,
        student,
        teacher,
        list(wrappers.values()),
        calib,
        dict(cfg["stage2"]),
        out.parent / f".{out.name}-logs",
        progress=progress,
        checkpoints=resume.checkpoints,
        seed=seed,
    )
    times["stage2"] = time.perf_counter() - start

    start = time.perf_counter()
    if progress:
        print(
            "report: fidelity to the host on held-out sentences and passages, then latency host "
            "vs grafted in alternating rounds",
            flush=True,
        )
    report = evaluate(host, teacher, student, texts, cfg)
    times["report"] = time.perf_counter() - start
    report.update(
        base=str(cfg["base"]),
        plan=plan.name,
        family=host.family.name,
        grafted=[
            f"{i}.{slot}:{spec.op}"
            for (i, slot), spec in plan.resolve(len(host.family.layers(teacher))).items()
        ],
        text={
            "sources": texts["sources"],
            "calibration_texts": len(texts["calibration"]),
            "ood_source": cfg["report"].get("ood_source"),
        },
        stage1=result1,
        stage2=result2,
        seconds=times,
    )
    save(
        out,
        student,
        plan,
        tokenizer=host.tokenizer,
        host_path=host.path,
        run_config=cfg,
        report=report,
        overwrite=bool(cfg.get("overwrite")),
    )
    resume.remove()
    report["out"] = str(out)
    return report


def evaluate(
    host: Host, teacher: torch.nn.Module, student: torch.nn.Module, texts: dict, cfg: dict
) -> dict[str, Any]:
    r = cfg["report"]
    bs = int(r["batch_size"])
    fidelity = {}
    for name in ("sentences", "passages", "ood_sentences", "ood_passages"):
        if name not in texts or (name.endswith("sentences") and not host.is_encoder):
            continue  # decoders: short sentences out of context say little (passages do)
        bt = batches(host.tokenizer, texts[name], bs, host.max_len)
        if host.is_encoder:
            fidelity[name] = encoder_fidelity(host, teacher, student, bt)
        else:
            fidelity[name] = {"n": len(texts[name]), **decoder_fidelity(teacher, student, bt)}
    samples = {}
    if not host.is_encoder:
        length = min(int(r["window_tokens"]), host.max_len)
        for name, paras in (("windows", texts["evaluation"]), ("ood_windows", texts.get("ood"))):
            windows = token_windows(host.tokenizer, paras or [], length, int(r["windows"]))
            if windows:
                fidelity[name] = {"n": len(windows), **decoder_fidelity(teacher, student, windows)}
        if int(r.get("sample_tokens", 0)) > 0:  # prompt: the first held-out paragraph's start
            prompt = " ".join(texts["evaluation"][0].split()[: int(r["sample_prompt_words"])])
            samples = generation_sample(
                host.tokenizer, teacher, student, prompt, int(r["sample_tokens"])
            )
    vocab = int(teacher.config.vocab_size)
    lengths = [int(n) for n in r["lengths"] if int(n) <= host.max_len]
    report: dict[str, Any] = {
        "fidelity": fidelity,
        "latency": latency(
            teacher,
            student,
            lengths,
            vocab,
            rounds=int(r["rounds"]),
            min_run_time=float(r["min_run_time"]),
        ),
        "params": {"host": count_params(teacher), "grafted": count_params(student)},
    }
    if samples:
        report["sample"] = samples
    if not host.is_encoder and int(r.get("decode_tokens", 0)) > 0:
        prompt, new = int(r["decode_prompt"]), int(r["decode_tokens"])
        report["decode"] = {"prompt_len": prompt, "new_tokens": new}
        for who, model in (("host", teacher), ("grafted", student)):
            speed = decode_throughput(model, prompt, new, vocab)
            report["decode"].update({f"{who}_{k}": v for k, v in speed.items()})
    return report
