"""The whole graft, from a config mapping (``conf/graft.yaml``): load the host, check the plan
against it, graft, stage 1, stage 2, report, save. ``python -m grafting.graft`` and the
benchmarks call ``run``."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from grafting import stage1, stage2
from grafting.checkpoints import Host, load_host
from grafting.data import (
    batches,
    passages,
    sample,
    sentences,
    source_texts,
    split_text,
    token_windows,
)
from grafting.io import save
from grafting.plan import load_plan
from grafting.report import (
    count_params,
    decode_throughput,
    decoder_fidelity,
    encoder_fidelity,
    generation_sample,
    latency,
)
from grafting.surgery import graft


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


def default_out(cfg: dict[str, Any]) -> Path:
    name = Path(str(cfg["plan"])).stem
    return Path(cfg.get("out") or f"runs/graft-{name}")


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Graft per ``cfg``; returns the report (also written to ``out/report.json``). (DiT hosts:
    ``grafting.dit.graft.run_dit``.)"""
    times: dict[str, float] = {}
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    out = default_out(cfg)
    if out.exists() and any(out.iterdir()) and not cfg.get("overwrite"):
        raise FileExistsError(f"out {str(out)!r} exists and is not empty (set overwrite=true)")
    progress = bool(cfg.get("progress", True))

    start = time.perf_counter()
    plan = load_plan(cfg["plan"])
    if plan.restructure:
        raise ValueError(f"plan {plan.name!r}: restructure={plan.restructure} is for DiT hosts")
    host = load_host(cfg["base"])
    teacher = host.model.requires_grad_(False)
    student = copy.deepcopy(teacher)
    wrappers = graft(student, host.family, plan)  # validates the whole plan before changing
    prepare_tokenizer(host)
    texts = text_sets(host, cfg, seed)
    bs = int(cfg["text"]["batch_size"])
    calib = batches(host.tokenizer, texts["calibration"], bs, host.max_len)
    times["load"] = time.perf_counter() - start

    s1 = dict(cfg["stage1"])
    result1, times["stage1"] = stage1.run(teacher, host.family, wrappers, calib, s1, progress, seed)

    start = time.perf_counter()
    result2 = stage2.train(
        host,
        student,
        teacher,
        list(wrappers.values()),
        calib,
        dict(cfg["stage2"]),
        out.parent / f".{out.name}-logs",
        progress=progress,
    )
    times["stage2"] = time.perf_counter() - start

    start = time.perf_counter()
    if progress:
        print("report: fidelity to the host on held-out sentences and passages, then latency host "
              "vs grafted in alternating rounds", flush=True)  # fmt: skip
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
        report["decode"] = {
            "prompt_len": prompt,
            "new_tokens": new,
            "host_tokens_per_s": decode_throughput(teacher, prompt, new, vocab),
            "grafted_tokens_per_s": decode_throughput(student, prompt, new, vocab),
        }
    return report
