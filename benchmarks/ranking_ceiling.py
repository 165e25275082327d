"""The ceiling of ranking fidelity: how well stand-alone training ranks the archs against itself.

``python benchmarks/ranking_ceiling.py [--from benchmarks/results/ranking.csv] [--seed 1]
[--workers 2] [--threads 1] [--bootstrap 2000] [--out CSV] [--no-write]``

Trains every architecture of a ``benchmarks/ranking.py`` CSV from scratch again, with the same
budget (steps, learning rate, task, validation batches) but another seed (initialisation and data
order), and reports Kendall τ between the two stand-alone runs, overall and within each mixer
type, with ``ranking.py``'s bootstrap intervals, next to the supernet's τ from the same CSV. No
supernet can be expected to agree with one stand-alone run better than a second stand-alone run
does: where this τ is low, the stand-alone budget, not the supernet, caps the benchmark.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from concurrent.futures import as_completed
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks._supernet_fixture import log, run_main  # noqa: E402
from benchmarks.common import command_line, header, write_section  # noqa: E402
from benchmarks.ranking import (  # noqa: E402
    BUDGET_KEYS,
    RESULTS_CSV,
    _pool,
    ranking_stats,
    train_job,
)
from nas.tasks import get_task  # noqa: E402
from search_spaces import Arch  # noqa: E402

OUT_CSV = RESULTS_CSV.with_name("ranking_ceiling.csv")
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
        rows = list(csv.DictReader(f))
    if not rows or not {"type", "arch", "inherited", "standalone", *BUDGET_KEYS} <= set(rows[0]):
        raise ValueError(f"--from {path}: not a ranking.py CSV with its training budget")
    return rows


def job(row: dict, seed: int, threads: int) -> dict:
    """The stand-alone training of ``row``'s arch with its budget and another seed."""
    val = row["val_batches"]
    return dict(
        arch=Arch.from_dict(json.loads(row["arch"])),
        task=get_task(json.loads(row["task"])),
        seed=seed,
        steps=int(row["standalone_steps"]),
        lr=float(row["standalone_lr"]),
        val_batches=None if val == "None" else int(val),
        threads=threads,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from", dest="source", default=str(RESULTS_CSV), help="a ranking.py CSV")
    p.add_argument("--seed", type=int, default=1, help="the second run's seed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--out", default=str(OUT_CSV), help="per-arch CSV of both runs")
    p.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md as it is")
    args = p.parse_args(argv)
    rows = read_rows(args.source)
    first_seed = {r["seed"] for r in rows}
    if str(args.seed) in first_seed:
        raise ValueError(f"--seed {args.seed}: the CSV was trained with that seed; choose another")
    if args.workers < 1 or args.threads < 1:
        raise ValueError("--workers and --threads must be positive")
    second: dict[int, dict] = {}
    bar = tqdm(total=len(rows), unit="arch", desc=f"stand-alone, seed {args.seed}")
    with _pool(args.workers) as pool:
        futures = {pool.submit(train_job, job(r, args.seed, args.threads)): i for i, r in enumerate(rows)}  # fmt: skip
        for future in as_completed(futures):
            i = futures[future]
            second[i] = future.result()
            bar.update(1)
            bar.set_postfix(
                first=rows[i]["standalone"][:6], second=f"{second[i]['val_metric']:.4f}"
            )
    bar.close()
    pairs = [dict(index=i, type=r["type"], signature=r.get("signature", ""),
                  first=float(r["standalone"]), second=second[i]["val_metric"],
                  second_seconds=second[i]["seconds"], inherited=float(r["inherited"]))
             for i, r in enumerate(rows)]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(pairs[0]))
        writer.writeheader()
        writer.writerows(pairs)
    seed0 = ", ".join(sorted(first_seed))
    ceiling = ranking_stats([dict(type=r["type"], inherited=r["second"], standalone=r["first"]) for r in pairs], args.bootstrap, 0)  # fmt: skip
    supernet = ranking_stats([dict(type=r["type"], inherited=r["inherited"], standalone=r["first"]) for r in pairs], args.bootstrap, 0)  # fmt: skip

    def cell(stats: dict, key: str) -> str:
        value, lo, hi, _ = stats[key]
        return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"

    table = [f"| τ against stand-alone (seed {seed0}) | stand-alone, seed {args.seed} | supernet (inherited) |",
             "|---|---|---|",
             f"| all {len(pairs)} archs | {cell(ceiling, 'all')} | {cell(supernet, 'all')} |",
             f"| mean within a mixer type | {cell(ceiling, 'within')} | {cell(supernet, 'within')} |"]  # fmt: skip
    for t in [k for k in ceiling if k not in ("all", "within")]:
        table.append(f"| within {t} | {cell(ceiling, t)} | {cell(supernet, t)} |")
    seconds = sum(r["second_seconds"] for r in pairs)
    body = "\n\n".join([
        header("Ranking fidelity ceiling: stand-alone vs stand-alone (benchmarks/ranking_ceiling.py)", command_line()),
        f"Every arch of `{shown(Path(args.source))}` trained from scratch again with its budget "
        f"({rows[0]['standalone_steps']} steps, lr {rows[0]['standalone_lr']}) and seed {args.seed} "
        f"instead of {seed0} (initialisation and data order), {args.workers} worker(s) x "
        f"{args.threads} thread(s), {seconds:.0f} s summed. Kendall τ with 90% bootstrap "
        "intervals as in `ranking.py`; the supernet column is that CSV's inherited scores. A "
        "supernet cannot be expected to agree with one stand-alone run better than another seed "
        "of the same training does.",
        "\n".join(table),
    ])  # fmt: skip
    print(body)
    if not args.no_write:
        write_section("ranking_ceiling", body + f"\n\nPer-arch CSV: `{shown(out)}`.")
    log(f"per-arch results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
