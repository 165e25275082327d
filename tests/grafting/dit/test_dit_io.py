"""Saving and loading DiT models: an exact round trip through a folder, original-style ``.pt``
checkpoints read with ``weights_only=True`` (raw state dict, or train.py's dict with ``ema``), and
one-line errors for missing, corrupt and mismatched files."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from grafting.dit import DiT, DiTConfig, load_dit, save_dit
from grafting.dit.io import infer_config

CONFIG = DiTConfig(
    input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=2, num_heads=4, num_classes=5
)


@pytest.fixture
def model() -> DiT:
    torch.manual_seed(0)
    m = DiT(CONFIG)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.normal_(0, 0.2)
    return m.eval()


def outputs(m: DiT) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 8, 8, generator=g)
    return m(x, torch.tensor([0, 10, 999]), torch.tensor([0, 4, 5]))


def test_folder_round_trip_is_exact(model, tmp_path):
    save_dit(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "dit"
    loaded = load_dit(tmp_path / "m")
    assert loaded.config == CONFIG and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert torch.equal(outputs(loaded), outputs(model))


def test_save_refuses_a_non_empty_folder(model, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        save_dit(model, tmp_path / "m")
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["keep.txt"]


def test_original_raw_state_dict_loads_with_weights_only(model, tmp_path):
    path = tmp_path / "DiT-tiny.pt"
    torch.save(model.state_dict(), path)  # what the released DiT-XL-2-256x256.pt holds
    loaded = load_dit(path, num_heads=4)  # no preset has this depth and width
    assert loaded.config == CONFIG
    assert torch.equal(outputs(loaded), outputs(model))


def test_original_train_checkpoint_loads_its_ema(model, tmp_path):
    other = DiT(CONFIG)
    path = tmp_path / "0400000.pt"
    args = argparse.Namespace(model="DiT-tiny", image_size=16)  # train.py saves its args too
    torch.save(
        {"model": other.state_dict(), "ema": model.state_dict(), "opt": {}, "args": args}, path
    )
    assert torch.equal(outputs(load_dit(path, num_heads=4)), outputs(model))


def test_infer_config_of_the_released_checkpoint():
    with torch.device("meta"):
        state = DiT(DiTConfig.from_preset("DiT-XL/2", input_size=64)).state_dict()  # 512x512
    assert infer_config(state) == DiTConfig.from_preset("DiT-XL/2", input_size=64)


def test_errors_are_one_line(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no DiT model folder or checkpoint file at"):
        load_dit(tmp_path / "missing.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_dit(tmp_path / "empty")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot read DiT checkpoint") as e:
        load_dit(corrupt, num_heads=4)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot infer num_heads .* pass preset= or num_heads="):
        torch.save(model.state_dict(), tmp_path / "tiny.pt")
        load_dit(tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="unknown DiT preset 'DiT-Q/2'"):
        load_dit(tmp_path / "tiny.pt", preset="DiT-Q/2")


def test_mismatched_checkpoint_names_the_tensor(model, tmp_path):
    state = model.state_dict()
    state["blocks.1.attn.qkv.weight"] = torch.zeros(90, 32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as e:
        load_dit(tmp_path / "bad.pt", num_heads=4)
    message = str(e.value)
    assert "\n" not in message and "blocks.1.attn.qkv.weight has shape (90, 32)" in message
    assert "expects (96, 32)" in message
    del state["blocks.1.attn.qkv.weight"]
    torch.save(state, tmp_path / "missing_key.pt")
    with pytest.raises(ValueError, match=r"1 missing keys \['blocks.1.attn.qkv.weight'\]"):
        load_dit(tmp_path / "missing_key.pt", num_heads=4)
    with pytest.raises(ValueError, match="does not fit DiT-S/2"):  # a preset that does not fit
        load_dit(tmp_path / "missing_key.pt", preset="DiT-S/2")
