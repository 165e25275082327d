"""The README's first command, measured: the quick search end to end, wall time and its front.

``python benchmarks/quick_search.py [--space efficient_attn] [override ...]``

Runs ``python -m nas.search +space=SPACE`` with the shipped defaults (``preset=quick``) in a fresh
temporary run directory and latency cache, so nothing is reused, and reports the wall time of
each phase (supernet training, trials, test re-evaluation) against the 10-minute target, the
printed front, and whether a member beats the baseline on latency at equal or better test metric
(issue 5's "done when").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from benchmarks.common import command_line, header, write_section  # noqa: E402
from nas.report import format_table  # noqa: E402
from nas.search import compose, run_search  # noqa: E402
from nas.tasks import get_task  # noqa: E402

TARGET_MIN = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="efficient_attn")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("overrides", nargs="*", help="extra search overrides (key=value)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"+space={args.space}", f"run_dir={tmp}/run",
                     f"latency.cache_dir={tmp}/latency", *args.overrides]  # fmt: skip
        start = time.perf_counter()
        result = run_search(compose(overrides))
        minutes = (time.perf_counter() - start) / 60
        supernet_s = _supernet_seconds(Path(tmp) / "run" / "supernet" / "supernet.json")
    cfg = compose(overrides)
    task = get_task(cfg.task)
    table = format_table(result.pareto, result.baseline, task.metric_name, task.direction)
    winners = [m for m in result.pareto if m.beats_baseline]
    verdict = (
        f"{'met' if minutes <= TARGET_MIN else 'NOT met'} (target <= {TARGET_MIN:.0f} min); "
        f"{len(winners)} Pareto member(s) beat the baseline"
    )
    body = (
        header("The quick search end to end (benchmarks/quick_search.py)", command_line())
        + f"`python -m nas.search +space={args.space}` with the shipped quick preset "
        f"({cfg.train.max_steps} supernet steps, {cfg.train.teacher_steps} of them teacher "
        f"only; {cfg.search.n_trials} trials, sampler {cfg.search.sampler}, latency measured "
        f"at {list(cfg.latency.shape or task.latency_shape)} with {cfg.latency.threads} "
        f"thread(s)), fresh run directory and latency cache.\n\n"
        f"Wall time: {minutes:.1f} min (supernet training {supernet_s / 60:.1f} min): {verdict}.\n\n"
        f"```\n{table}\n```\n"
    )
    print(body)
    if not args.no_write:
        write_section("quick_search", body)


def _supernet_seconds(meta: Path) -> float:
    return float(json.loads(meta.read_text()).get("train_seconds", 0.0)) if meta.is_file() else 0.0


if __name__ == "__main__":
    main()
