"""The ceiling of ranking fidelity: how well stand-alone training ranks the archs against itself.

``python benchmarks/ranking_ceiling.py [--from benchmarks/results/ranking.csv] [--seed 1]
[--second-from CSV] [--also CSV ...] [--workers 2] [--threads 1] [--bootstrap 2000] [--out CSV]
[--section NAME] [--no-write]``

Trains every architecture of a ``benchmarks/ranking.py`` CSV from scratch again, with the same
budget (steps, batch size, learning rate, task, validation batches) but another seed (initialisation and data
order), and reports Kendall τ between the two stand-alone runs, overall and within each mixer
type, with ``ranking.py``'s bootstrap intervals, next to the supernet's τ from the same CSV. No
supernet can be expected to agree with one stand-alone run better than a second stand-alone run
does: where this τ is low, the stand-alone budget, not the supernet, caps the benchmark. The
supernet is also compared with the second run and with the mean of both (a less noisy reference).

Below the table: what a perfect ranker (one that knows the true order) could expect against one
stand-alone run, if the run-to-run noise were Gaussian and as large as measured here
(``perfect_ranker``): the target τ is worth setting only where that is comfortably above it.
Then, per mixer type, the signal a ranker must resolve (the spread of the archs' stand-alone
results) against the supernet's error, and whether two supernets make the same errors
(``within_type_errors``).

``--second-from CSV`` takes the second runs from a previous ``ranking_ceiling.csv`` (same archs,
same first results, same seed) instead of training them again, so that a new supernet's scores in
``--from`` are compared in seconds.

``--also CSV`` (repeatable) adds other supernets (for example other supernet seeds, scored by
``ranking.py --standalone-from`` on the same archs): each gets its τ against the mean of both
stand-alone runs, and the table ends with the mean over every supernet, against the targets
(τ ≥ 0.75 overall, ≥ 0.5 within a type).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks._supernet_fixture import log, run_main  # noqa: E402
from benchmarks.common import command_line, header, write_section  # noqa: E402
from benchmarks.rank_stats import (  # noqa: E402
    PERFECT_DRAWS,
    perfect_ranker_line,
    ranking_stats,
    render_errors,
    within_type_errors,
)
from benchmarks.ranking import BUDGET_KEYS, RESULTS_CSV, _pool, budget_of, train_job  # noqa: E402
from nas.tasks import get_task  # noqa: E402
from search_spaces import Arch  # noqa: E402

OUT_CSV = RESULTS_CSV.with_name("ranking_ceiling.csv")
TARGET_REFERENCE, TARGET_ALL, TARGET_WITHIN = 0.85, 0.75, 0.5
ROOT = Path(__file__).resolve().parent.parent


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it lies inside it (for BENCHMARKS.md)."""
    full = path.resolve()
    return full.relative_to(ROOT) if full.is_relative_to(ROOT) else path


def read_rows(path: str) -> list[dict]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--from {path}: no such file")
    with file.open(newline="") as f:
        rows = [budget_of(r) for r in csv.DictReader(f)]
    if not rows or not {"type", "arch", "inherited", "standalone", *BUDGET_KEYS} <= set(rows[0]):
        raise ValueError(f"--from {path}: not a ranking.py CSV with its training budget")
    return rows


def cached_second_runs(path: str, rows: list[dict], seed: int) -> dict[int, dict]:
    """The second runs of ``rows`` from a previous output CSV, checked to be the same archs with
    the same first results and the same second seed."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--second-from {path}: no such file")
    with file.open(newline="") as f:
        cached = list(csv.DictReader(f))
    same = len(cached) == len(rows) and all(
        c.get("signature") == r.get("signature")
        and float(c["first"]) == float(r["standalone"])
        and c.get("second_seed", str(seed)) == str(seed)
        for c, r in zip(cached, rows, strict=False)
    )
    if not same:
        raise ValueError(f"--second-from {path}: other archs, first results or seed than --from")
    return {
        i: dict(val_metric=float(c["second"]), seconds=float(c["second_seconds"]))
        for i, c in enumerate(cached)
    }


def target_line(label: str, stats: list[dict], key: str, target: float) -> str:
    """``- label: τ ... (mean of the columns' τs): met / NOT met (target ≥ target)``."""
    value = float(np.mean([s[key][0] for s in stats]))
    verdict = "met" if value >= target else "NOT met"
    return f"- {label}: τ **{value:.3f}**: {verdict} (target ≥ {target})"


def job(row: dict, seed: int, threads: int) -> dict:
    """The stand-alone training of ``row``'s arch with its budget and another seed."""
    val = row["val_batches"]
    return dict(
        arch=Arch.from_dict(json.loads(row["arch"])),
        task=get_task(json.loads(row["task"])),
        seed=seed,
        steps=int(row["standalone_steps"]),
        batch=int(row["standalone_batch"]),
        lr=float(row["standalone_lr"]),
        val_batches=None if val == "None" else int(val),
        threads=threads,
    )


def train_second_runs(rows: list[dict], seed: int, workers: int, threads: int) -> dict[int, dict]:
    """Every arch of ``rows`` trained from scratch with its budget and ``seed``."""
    second: dict[int, dict] = {}
    bar = tqdm(total=len(rows), unit="arch", desc=f"stand-alone, seed {seed}")
    with _pool(workers) as pool:
        futures = {pool.submit(train_job, job(r, seed, threads)): i for i, r in enumerate(rows)}
        for future in as_completed(futures):
            i = futures[future]
            second[i] = future.result()
            bar.update(1)
            bar.set_postfix(
                first=rows[i]["standalone"][:6], second=f"{second[i]['val_metric']:.4f}"
            )
    bar.close()
    return second


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", default=str(RESULTS_CSV), help="a ranking.py CSV")
    p.add_argument("--seed", type=int, default=1, help="the second run's seed")
    p.add_argument(
        "--second-from",
        default=None,
        metavar="CSV",
        help="second runs from a previous output CSV instead of training them",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="CSV",
        help="another supernet's ranking.py CSV over the same archs",
    )
    p.add_argument("--out", default=str(OUT_CSV), help="per-arch CSV of both runs")
    p.add_argument("--section", default="ranking_ceiling", help="BENCHMARKS.md section")
    p.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md as it is")
    return p


def read_inputs(args: argparse.Namespace) -> tuple[list[dict], list[list[dict]]]:
    """The rows of ``--from`` and of each ``--also`` CSV, checked against each other and the
    arguments."""
    rows = read_rows(args.source)
    others = [read_rows(path) for path in args.also]
    for path, other in zip(args.also, others, strict=True):
        if [(r["signature"], r["standalone"]) for r in other] != [
            (r["signature"], r["standalone"]) for r in rows
        ]:
            raise ValueError(f"--also {path}: other archs or stand-alone results than --from")
    if str(args.seed) in {r["seed"] for r in rows}:
        raise ValueError(f"--seed {args.seed}: the CSV was trained with that seed; choose another")
    if args.workers < 1 or args.threads < 1:
        raise ValueError("--workers and --threads must be positive")
    return rows, others


def tau_columns(
    pairs: list[dict], others: list[list[dict]], seed: int, seed0: str, n_boot: int
) -> dict[str, dict]:
    """``{column header: ranking_stats}``: seed vs seed, then each supernet against the first
    run, the second run and the mean of both (further supernets against the mean only)."""
    scored = [dict(p) for p in pairs]

    def tau(score: str, reference) -> dict:
        ranked = [dict(type=r["type"], inherited=r[score], standalone=reference(r)) for r in scored]
        return ranking_stats(ranked, n_boot, 0)

    mean = lambda r: (r["first"] + r["second"]) / 2  # noqa: E731
    columns = {  # column header: its τ statistics
        f"stand-alone seed {seed} vs seed {seed0}": tau("second", lambda r: r["first"]),
        f"supernet vs seed {seed0}": tau("inherited", lambda r: r["first"]),
        f"supernet vs seed {seed}": tau("inherited", lambda r: r["second"]),
        "supernet vs mean of both": tau("inherited", mean),
    }
    for k, other in enumerate(others, start=2):
        for pair, row in zip(scored, other, strict=True):
            pair[f"inherited_{k}"] = float(row["inherited"])
        columns[f"supernet {k} vs mean of both"] = tau(f"inherited_{k}", mean)
    return columns


def measure(args: argparse.Namespace) -> dict:
    """The first runs (``--from``), the second runs (trained, or ``--second-from``), one pair per
    arch (the rows of the output CSV) and the τ statistics of every column, for ``render``."""
    rows, others = read_inputs(args)
    if args.second_from:
        second = cached_second_runs(args.second_from, rows, args.seed)
    else:
        second = train_second_runs(rows, args.seed, args.workers, args.threads)
    pairs = [
        dict(
            index=i,
            type=r["type"],
            signature=r.get("signature", ""),
            first=float(r["standalone"]),
            second=second[i]["val_metric"],
            second_seconds=second[i]["seconds"],
            second_seed=args.seed,
            inherited=float(r["inherited"]),
        )
        for i, r in enumerate(rows)
    ]
    seed0 = ", ".join(sorted({r["seed"] for r in rows}))
    columns = tau_columns(pairs, others, args.seed, seed0, args.bootstrap)
    errors = within_type_errors(pairs, others, args.bootstrap)
    return dict(rows=rows, pairs=pairs, seed0=seed0, columns=columns, errors=errors)


def write_pairs(out: Path, pairs: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(pairs[0]))
        writer.writeheader()
        writer.writerows(pairs)


def render_table(columns: dict[str, dict], n: int) -> str:
    """Kendall τ with intervals: one column per comparison, rows all / within / each type."""

    def cell(stats: dict, key: str) -> str:
        value, lo, hi, _ = stats[key]
        return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"

    def line(label: str, key: str) -> str:
        return f"| {label} | " + " | ".join(cell(c, key) for c in columns.values()) + " |"

    table = [
        "| Kendall τ | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        line(f"all {n} archs", "all"),
        line("mean within a mixer type", "within"),
    ]
    first_column = next(iter(columns.values()))
    table += [line(f"within {t}", t) for t in first_column if t not in ("all", "within")]
    return "\n".join(table)


def render_verdicts(columns: dict[str, dict]) -> str:
    """Seed vs seed and the supernets (mean over them) against the targets."""
    supernets = [c for name, c in columns.items() if "vs mean of both" in name]
    reference = next(iter(columns.values()))
    verdicts = [
        target_line("stand-alone seed vs seed, all archs", [reference], "all", TARGET_REFERENCE),
        target_line(
            f"supernet vs mean of both, all archs, mean over {len(supernets)} supernet(s)",
            supernets,
            "all",
            TARGET_ALL,
        ),
        target_line(
            f"supernet vs mean of both, mean within a type, mean over {len(supernets)} supernet(s)",
            supernets,
            "within",
            TARGET_WITHIN,
        ),
    ]
    return "\n".join(verdicts)


def render_perfect(columns: dict[str, dict], n: int) -> str:
    """What a perfect ranker could expect, at the measured seed-vs-seed τ (``perfect_ranker``)."""
    first_column = next(iter(columns.values()))
    types = [t for t in first_column if t not in ("all", "within")]
    per_type = round(n / max(1, len(types)))
    perfect = [
        perfect_ranker_line("all archs", first_column["all"][0], n),
        perfect_ranker_line("within a type", first_column["within"][0], per_type),
    ]
    return (
        "A perfect ranker (the true order), if run-to-run noise were Gaussian and as large as "
        f"measured here (`perfect_ranker`, {PERFECT_DRAWS} draws):\n" + "\n".join(perfect)
    )


def render(res: dict, args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section: protocol, τ table, targets, the perfect ranker."""
    rows, pairs, seed0, columns = res["rows"], res["pairs"], res["seed0"], res["columns"]
    seconds = sum(r["second_seconds"] for r in pairs)
    return "\n\n".join(
        [
            header(
                "Ranking fidelity ceiling: stand-alone vs stand-alone (benchmarks/ranking_ceiling.py)",
                command_line(),
            ),
            f"Every arch of `{shown(Path(args.source))}` trained from scratch again with its budget "
            f"({rows[0]['standalone_steps']} steps of batch {rows[0]['standalone_batch']}, lr {rows[0]['standalone_lr']}) and seed {args.seed} "
            f"instead of {seed0} (initialisation and data order), {seconds:.0f} s summed"
            f"{f' (taken from `{shown(Path(args.second_from))}`)' if args.second_from else f', {args.workers} worker(s) x {args.threads} thread(s)'}. Kendall τ with 90% bootstrap "
            "intervals as in `ranking.py`; the supernet's scores are that CSV's inherited ones. A "
            "supernet cannot be expected to agree with one stand-alone run better than another seed "
            "of the same training does."
            + "".join(
                f" Supernet {k}: the inherited scores of `{shown(Path(path))}`."
                for k, path in enumerate(args.also, start=2)
            ),
            render_table(columns, len(pairs)),
            render_verdicts(columns),
            render_perfect(columns, len(pairs)),
            render_errors(res["errors"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.section.replace("_", "").isalnum():
        raise ValueError(f"--section must be letters, digits and _, got {args.section!r}")
    res = measure(args)
    out = Path(args.out)
    write_pairs(out, res["pairs"])
    body = render(res, args)
    print(body)
    if not args.no_write:
        write_section(args.section, body + f"\n\nPer-arch CSV: `{shown(out)}`.")
    log(f"per-arch results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
