"""Every command answers ``--help`` with its options and ``--cfg job`` with the composed config
(both exit 0, nothing run); Hydra's own flags are lost with the compose API."""

from __future__ import annotations

import importlib

import pytest
import yaml

COMMANDS = {  # module: (a key its config file documents, arguments that compose, a top-level key)
    "nas.search": ("n_trials", ["+space=efficient_attn"], "seed"),
    "nas.train_supernet": ("teacher_steps", ["+space=efficient_attn"], "seed"),
    "nas.export": ("trials", ["run=somewhere"], "seed"),
    "nas.latency.__main__": ("threads", [], "threads"),
    "grafting.graft": ("stage1", [], "seed"),
    "grafting.export": ("run", ["run=somewhere"], "seed"),
    "grafting.dit.train": ("ema_decay", [], "seed"),
    "grafting.dit.sample": ("cfg_scale", [], "seed"),
    "grafting.dit.metric": ("per_class", [], "seed"),
}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_and_cfg_job(module: str, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written: the folder must stay empty
    key, args, number = COMMANDS[module]
    main = importlib.import_module(module).main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert f"{key}:" in out and "--cfg job" in out and "#" in out  # keys with their comments
    assert main([*args, f"{number}=7", "--cfg", "job"]) == 0
    composed = yaml.safe_load(capsys.readouterr().out)
    assert composed[number] == 7
    assert list(tmp_path.iterdir()) == []
