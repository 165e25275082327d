"""``python -m grafting.graft base=PATH_OR_PRESET plan=NAME_OR_PATH [stage1.* stage2.*] out=DIR``

Grafts the plan's operators into the host, distils in two stages, prints the report table and
writes the grafted model to ``out`` (see ``conf/graft.yaml`` for every setting)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from search_spaces.cli import UsageError, run_cli


def main_cfg(cfg: DictConfig) -> int:
    from grafting.pipeline import run
    from grafting.report import table

    try:
        report = run(OmegaConf.to_container(cfg, resolve=True))
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    print(table(report))
    print(f"saved to {report['out']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(main_cfg, "graft", argv)


if __name__ == "__main__":
    sys.exit(main())
