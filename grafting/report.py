"""Evaluation of a grafted model against its teacher: fidelity on held-out short sentences and
256-512-token passages, measured latency (host vs grafted, side by side), decode throughput for
decoders, parameters and time per stage; ``table`` renders the report for the terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from common.timing import Runner, alternating_rounds, median_round
from grafting.checkpoints import Host, embed


@torch.no_grad()
def encoder_fidelity(
    host: Host, teacher: nn.Module, student: nn.Module, batches: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Mean/min cosine between teacher and student embeddings, and the Spearman correlation of
    their pairwise similarities (how well the grafted model keeps the teacher's ranking)."""
    t = torch.cat([embed(host, teacher, b) for b in batches])
    s = torch.cat([embed(host, student, b) for b in batches])
    cos = F.cosine_similarity(t, s, dim=-1)
    iu = torch.triu_indices(len(t), len(t), offset=1)
    tn, sn = F.normalize(t, dim=-1), F.normalize(s, dim=-1)
    t_sim, s_sim = (tn @ tn.T)[iu[0], iu[1]], (sn @ sn.T)[iu[0], iu[1]]
    rho = float(spearmanr(t_sim.numpy(), s_sim.numpy()).statistic) if len(t) > 2 else float("nan")
    return {
        "n": len(t),
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "spearman": rho,
    }


@torch.no_grad()
def decoder_fidelity(
    teacher: nn.Module,
    student: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    teacher_logits: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """Perplexity of teacher and student on the text, the mean per-token KL(teacher||student),
    greedy next-token accuracy of each against the text (``top1_*``), and how often the student's
    greedy choice is the teacher's (``top1_agree``). ``teacher_logits`` (logits or
    log-probabilities, one tensor per batch) spare the teacher's forward when scoring many
    students on the same text (a plan search)."""
    sums = dict.fromkeys(("nll_t", "nll_s", "kl", "hit_t", "hit_s", "agree"), 0.0)
    tokens = n_pos = 0
    for i, b in enumerate(batches):
        mask = b["attention_mask"].bool()
        lt = teacher_logits[i] if teacher_logits is not None else teacher(**b).logits.float()
        ls = student(**b).logits.float()
        sums["kl"] += float(
            F.kl_div(
                F.log_softmax(ls[mask], -1),
                F.log_softmax(lt[mask], -1),
                log_target=True,
                reduction="sum",
            )
        )
        n_pos += int(mask.sum())
        target = b["input_ids"][:, 1:]
        real = mask[:, 1:] & mask[:, :-1]
        pt, ps = lt[:, :-1][real], ls[:, :-1][real]  # (N, V) predictions of real next tokens
        sums["nll_t"] += float(F.cross_entropy(pt, target[real], reduction="sum"))
        sums["nll_s"] += float(F.cross_entropy(ps, target[real], reduction="sum"))
        sums["hit_t"] += float((pt.argmax(-1) == target[real]).sum())
        sums["hit_s"] += float((ps.argmax(-1) == target[real]).sum())
        sums["agree"] += float((pt.argmax(-1) == ps.argmax(-1)).sum())
        tokens += int(real.sum())
    tokens = max(tokens, 1)
    return {
        "ppl_teacher": float(torch.tensor(sums["nll_t"] / tokens).exp()),
        "ppl_student": float(torch.tensor(sums["nll_s"] / tokens).exp()),
        "ppl_ratio": float(torch.tensor((sums["nll_s"] - sums["nll_t"]) / tokens).exp()),
        "kl": sums["kl"] / max(n_pos, 1),
        "top1_teacher": sums["hit_t"] / tokens,
        "top1_student": sums["hit_s"] / tokens,
        "top1_agree": sums["agree"] / tokens,
    }


@torch.no_grad()
def generation_sample(
    tokenizer: Any, teacher: nn.Module, student: nn.Module, prompt: str, new_tokens: int
) -> dict[str, str]:
    """Greedy continuations of ``prompt`` by host and grafted model (a sample a person reads)."""
    enc = tokenizer(prompt, return_tensors="pt")
    out = {"prompt": prompt}
    for name, model in (("host", teacher), ("grafted", student)):
        ids = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        out[name] = tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


class _Call(nn.Module):
    """A callable as a module, so the timing core can run it (``Runner`` calls ``model(**{})``)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self) -> Any:
        return self.fn()


@torch.no_grad()
def time_side_by_side(
    host: Callable[[], Any],
    grafted: Callable[[], Any],
    *,
    rounds: int = 9,
    min_run_time: float = 1.0,
    device: str = "cpu",
) -> dict[str, float]:
    """Seconds per call of ``host`` and ``grafted`` from at least ``rounds`` alternating rounds
    and ``min_run_time`` seconds (``common.timing``, the core ``nas.latency`` uses): the two
    times are those of the median round by ratio, so their ratio is the measurement."""
    threads = torch.get_num_threads()
    runners = [Runner(_Call(fn), {}, device, threads) for fn in (grafted, host)]
    for runner in runners:
        runner.calibrate(warmup=2, block_time=0.05)
    measured = alternating_rounds(*runners, repeats=rounds, min_run_time=min_run_time)
    _, grafted_s, host_s = median_round(measured)
    return {"host": host_s, "grafted": grafted_s, "rounds": len(measured)}


def latency(
    teacher: nn.Module,
    student: nn.Module,
    lengths: list[int],
    vocab_size: int,
    *,
    batch_size: int = 1,
    rounds: int = 9,
    min_run_time: float = 1.0,
) -> list[dict[str, float]]:
    """Forward latency of host and grafted model at each length, timed side by side."""
    rows = []
    device = next(teacher.parameters()).device
    for n in lengths:
        gen = torch.Generator().manual_seed(n)
        ids = torch.randint(0, vocab_size, (batch_size, n), generator=gen).to(device)
        mask = torch.ones_like(ids)
        best = time_side_by_side(
            partial(teacher, input_ids=ids, attention_mask=mask),
            partial(student, input_ids=ids, attention_mask=mask),
            rounds=rounds,
            min_run_time=min_run_time,
            device=str(device),
        )
        rows.append(
            {
                "seq_len": n,
                "host_ms": best["host"] * 1e3,
                "grafted_ms": best["grafted"] * 1e3,
                "speedup": best["host"] / best["grafted"],
                "rounds": best["rounds"],
            }
        )
    return rows


@torch.no_grad()
def decode_throughput(
    model: nn.Module, prompt_len: int, new_tokens: int, vocab_size: int, seed: int = 0
) -> dict[str, float]:
    """Greedy generation of ``new_tokens`` after a ``prompt_len``-token prompt: ``tokens`` (the
    new tokens ``generate`` returned), ``seconds`` (what the call took) and ``tokens_per_s``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (1, prompt_len), generator=g)
    kwargs = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        attention_mask=torch.ones_like(ids),
    )
    start = time.perf_counter()
    out = model.generate(ids, **kwargs)  # (1, prompt_len + tokens)
    seconds = time.perf_counter() - start
    tokens = out.shape[1] - prompt_len
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def count_params(model: nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def table(report: dict[str, Any]) -> str:
    """The report as aligned plain-text tables."""
    lines = [f"graft {report['plan']} into {report['base']} ({report['family']})", ""]
    fid = report["fidelity"]
    keys = sorted({k for v in fid.values() for k in v if k != "n"})
    lines.append(
        _rows(
            ["text", "n", *keys],
            [[name, v.get("n", ""), *(v.get(k, "") for k in keys)] for name, v in fid.items()],
        )
    )
    lines.append("")
    lat = report.get("latency", [])
    if lat:
        lines.append(
            _rows(
                ["seq_len", "host_ms", "grafted_ms", "speedup"],
                [[r["seq_len"], r["host_ms"], r["grafted_ms"], r["speedup"]] for r in lat],
            )
        )
        lines.append("")
    dec = report.get("decode")
    if dec:
        lines.append(
            f"decode: {dec['host_tokens_per_s']:.1f} -> {dec['grafted_tokens_per_s']:.1f} tokens/s "
            f"(prompt {dec['prompt_len']}, {dec['new_tokens']} new tokens)"
        )
    sample = report.get("sample")
    if sample:
        lines.append(f"sample, greedy after: {sample['prompt']!r}")
        lines += [f"  {who:>7}: {sample[who]!r}" for who in ("host", "grafted")]
    p = report["params"]
    lines.append(f"params: host {p['host']:,}, grafted {p['grafted']:,}")
    t = report["seconds"]
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items()))
    return "\n".join(lines)


def _rows(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [header] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
