"""SearchSpace: loading, sampling (random and Optuna), references, membership, bad files."""

from __future__ import annotations

import random

import optuna
import pytest
import yaml

from search_spaces import Arch, HeadSpec
from search_spaces.config_paths import available
from search_spaces.space import SpaceError, load_space

SPACES = available("space")


def test_shipped_spaces() -> None:
    assert {"efficient_attn", "metaformer", "looped", "hybrid"} <= set(SPACES)


@pytest.mark.parametrize("name", SPACES)
def test_samples_are_valid_members(name: str) -> None:
    space = load_space(name)
    for seed in range(40):
        arch = space.sample(random.Random(seed))
        space.validate(arch)
        assert space.contains(arch)
        assert Arch.from_dict(arch.to_dict()) == arch
    assert space.sample(random.Random(3)) == space.sample(random.Random(3))


@pytest.mark.parametrize("name", SPACES)
def test_references_are_members_and_ordered(name: str) -> None:
    space = load_space(name)
    base, teacher, small = space.baseline(), space.teacher(), space.smallest()
    for arch in (base, teacher, small):
        assert space.contains(arch)
    assert any(layer.mixer.name != "identity" for layer in small.layers)
    assert small.dim <= base.dim <= teacher.dim and small.depth <= teacher.depth


def test_optuna_sampling_uses_readable_names_and_replays() -> None:
    space = load_space("efficient_attn")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    arch = space.sample(trial)
    assert {"dim", "depth", "norm", "layer0.mixer", "layer0.channel"} <= set(trial.params)
    study.tell(trial, 0.0)
    # a fixed trial with the same parameters rebuilds the same architecture
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == arch


@pytest.mark.parametrize("name", SPACES)
def test_params_of_replays_every_arch(name: str) -> None:
    space = load_space(name)
    rng = random.Random(3)
    archs = [space.baseline(), space.teacher(), space.smallest()]
    for arch in archs + [space.sample(rng) for _ in range(20)]:
        params = space.params_of(arch)
        assert space.sample(optuna.trial.FixedTrial(params)) == arch


def test_head_is_written_into_samples() -> None:
    head = HeadSpec(kind="lm", vocab_size=99, max_len=64)
    space = load_space("efficient_attn")
    assert space.sample(random.Random(0), head=head).head == head
    assert space.baseline(head).head == head


def test_size_counts_distinct_architectures() -> None:
    space = load_space("efficient_attn")
    per_layer = (2 + 2 + 4 + 4 + 2) * (2 + 2)
    assert space.size() == 3 * 2 * (per_layer**2 + per_layer**3 + per_layer**4)
    seen = {load_space("looped").sample(random.Random(s)).signature for s in range(300)}
    assert len(seen) <= load_space("looped").size()


def test_validate_names_the_field() -> None:
    space = load_space("efficient_attn")
    arch = space.baseline()
    d = arch.to_dict()
    d["layers"][1]["mixer"]["heads"] = 8
    with pytest.raises(ValueError, match=r"layers\[1\]\.mixer\.heads: 8 is not a choice"):
        space.validate(Arch.from_dict(d))
    with pytest.raises(ValueError, match=r"dim: 512 is not a choice"):
        space.validate(arch.replace(dim=512))
    assert not space.contains(arch.replace(dim=512))


def _write(tmp_path, data) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_user_space_file_loads(tmp_path) -> None:
    data = yaml.safe_load(open(load_space("efficient_attn").source))
    data["name"] = "mine"
    data["mixer"] = {"softmax": data["mixer"]["softmax"]}
    data["references"]["smallest"]["mixer"] = {"name": "softmax", "heads": 2, "rope_theta": 10000.0}
    space = load_space(_write(tmp_path, data))
    assert space.name == "mine" and space.sample(random.Random(0)).layers[0].mixer.name == "softmax"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"dim": []}, "dim"),
        ({"mixer": {"nope": {}}}, "mixer.nope"),
        ({"mixer": {"softmax": {"colour": [1]}}}, "mixer.softmax"),
        ({"depht": [2]}, "depht"),
        ({"references": {}}, "references.baseline"),
        ({"loop": {"begin": [1]}}, "loop"),
    ],
)
def test_malformed_space_names_file_and_field(tmp_path, change, field) -> None:
    data = yaml.safe_load(open(load_space("efficient_attn").source))
    data.update(change)
    path = _write(tmp_path, data)
    with pytest.raises(SpaceError, match=rf"{path}: field `{field}`: expected"):
        load_space(path)


def test_reference_outside_the_space_is_rejected(tmp_path) -> None:
    data = yaml.safe_load(open(load_space("efficient_attn").source))
    data["references"]["baseline"]["dim"] = 1024
    with pytest.raises(SpaceError, match="references.baseline.*dim: 1024"):
        load_space(_write(tmp_path, data))


def test_unknown_space_lists_available() -> None:
    with pytest.raises(FileNotFoundError, match="efficient_attn"):
        load_space("no_such_space")
