"""``python -m grafting.graft base=PATH_OR_PRESET plan=NAME_OR_PATH [stage1.* stage2.*] out=DIR``

Grafts the plan's operators into the host, distils in two stages, prints the report table and
writes the grafted model to ``out`` (see ``conf/graft.yaml`` for every setting)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from search_spaces.cli import UsageError, import_plugins, run_cli


def main_cfg(cfg: DictConfig) -> int:
    from grafting.dit.graft import run_dit
    from grafting.dit.report import table as dit_table
    from grafting.pipeline import run
    from grafting.report import table

    import_plugins(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    try:
        report = run_dit(config) if "data" in config else run(config)
    except FileExistsError as e:
        raise UsageError(str(e)) from None
    print(dit_table(report) if report["family"] == "dit" else table(report))
    print(f"saved to {report['out']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``conf/graft.yaml``, or ``conf/graft_dit.yaml`` when ``base=`` is a DiT folder."""
    from grafting.dit.graft import is_dit

    argv = sys.argv[1:] if argv is None else list(argv)
    base = next((a.split("=", 1)[1] for a in argv if a.startswith("base=")), None)
    return run_cli(main_cfg, "graft_dit" if base and is_dit(base) else "graft", argv)


if __name__ == "__main__":
    sys.exit(main())
