"""The Arch spec: presets, round trips, stable signatures, validation naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from search_spaces import Arch, load_arch
from search_spaces.config_paths import available

PRESETS = available("arch")


def test_required_presets_ship() -> None:
    assert {"transformer", "poolformer", "hybrid_softmax_linear", "looped"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_round_trip_dict_yaml_json(name: str, tmp_path) -> None:
    arch = load_arch(name)
    assert Arch.from_dict(arch.to_dict()) == arch
    for suffix in (".yaml", ".json"):
        path = arch.save(tmp_path / f"a{suffix}")
        again = Arch.load(path)
        assert again == arch and again.to_dict() == arch.to_dict()
        assert again.signature == arch.signature


def test_signature_is_stable_across_processes() -> None:
    arch = load_arch("hybrid_softmax_linear")
    code = "import search_spaces as s; print(s.load_arch('hybrid_softmax_linear').signature)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == arch.signature


def test_signature_distinguishes_and_normalises_numbers() -> None:
    arch = load_arch("transformer")
    d = arch.to_dict()
    d["layers"][0]["channel"]["ratio"] = 4.0  # same value, float
    assert Arch.from_dict(d).signature == arch.signature
    d["layers"][0]["channel"]["ratio"] = 3
    assert Arch.from_dict(d).signature != arch.signature


def _with(arch: Arch, path: str, value) -> dict:
    d = arch.to_dict()
    target = d
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    target[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("dim", 0, r"Arch\.dim: must be a positive integer, got 0"),
        ("block", "zigzag", r"Arch\.block: must be one of"),
        ("head.kind", "regression", r"Arch\.head\.kind"),
        ("head.vocab_size", 0, r"Arch\.head\.vocab_size"),
        ("layers.1.mixer", {"name": "nope"}, r"Arch\.layers\[1\]\.mixer: unknown mixer .*softmax"),
        ("layers.0.channel", {"name": "mlp", "colour": 1}, r"layers\[0\]\.channel: .*'colour'"),
        (
            "layers.2.norm",
            "batchnorm",
            r"layers\[2\]\.norm: 'batchnorm' cannot be used in a causal",
        ),
        ("loop", {"begin": 1, "middle": 1, "end": 1, "repeats": 2}, r"Arch\.loop: .*4"),
        (
            "loop",
            {"begin": 1, "middle": 3, "end": 0, "turns": 2},
            r"Arch\.loop: unknown key 'turns'",
        ),
    ],
)
def test_invalid_values_name_the_field(path: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Arch.from_dict(_with(load_arch("transformer"), path, value))


def test_unknown_top_level_field() -> None:
    d = load_arch("transformer").to_dict()
    d["widht"] = 3
    with pytest.raises(ValueError, match="Arch.widht: unknown field"):
        Arch.from_dict(d)


def test_derived_fields() -> None:
    looped = load_arch("looped")
    assert looped.causal and looped.depth == 1 + 2 * 3 + 1
    pool = load_arch("poolformer")
    assert not pool.causal and pool.grid == (8, 8) and pool.max_len == 64


def test_user_config_directory_is_searched_first(tmp_path, monkeypatch) -> None:
    (tmp_path / "arch").mkdir()
    arch = load_arch("transformer").replace(dim=128)
    arch.save(tmp_path / "arch" / "my_model.yaml")
    monkeypatch.setenv("NAS_CONFIG_PATH", str(tmp_path))
    assert "my_model" in available("arch")
    assert load_arch("my_model") == arch


def test_missing_preset_lists_available() -> None:
    with pytest.raises(FileNotFoundError, match="transformer"):
        load_arch("no_such_model")
