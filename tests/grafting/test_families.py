"""The graft family registry: ``@register_family`` makes a family available by name and by
``model_type``; unknown names and model types list the valid ones."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import grafting.families as families
from grafting.families import Family, get_family, list_families, register_family
from grafting.families.base import FAMILY_REGISTRY
from grafting.families.gpt2 import GPT2Family


class ToyFamily(GPT2Family):
    """A user's family: GPT-2's layout under another ``model_type``."""

    model_types = ("toy_gpt",)

    def check_config(self, config) -> None:
        if getattr(config, "bad", False):
            raise ValueError("toy: bad config")


def test_register_family_is_found_by_name_and_model_type() -> None:
    try:
        assert register_family("toy")(ToyFamily) is ToyFamily
        assert ToyFamily.name == "toy" and "toy" in list_families()
        family = get_family("toy")
        assert isinstance(family, ToyFamily)
        assert get_family(SimpleNamespace(model_type="toy_gpt")) is family
        with pytest.raises(ValueError, match="toy: bad config"):  # the family checks the config
            get_family(SimpleNamespace(model_type="toy_gpt", bad=True))
        assert family in families.FAMILIES  # FAMILIES is a live view of the registry
        register_family("toy")(ToyFamily)  # the same class again is a no-op
        with pytest.raises(ValueError, match="'toy' is already registered"):
            register_family("toy")(GPT2Family)
    finally:
        FAMILY_REGISTRY.remove("toy")
    assert "toy" not in list_families()


def test_a_model_type_belongs_to_one_family() -> None:
    class Clash(ToyFamily):
        model_types = ("toy_gpt", "llama")

    with pytest.raises(
        ValueError,
        match="model_type 'llama' of family 'clash' is already claimed by family 'llama'",
    ):
        register_family("clash")(Clash)
    assert "clash" not in list_families()


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown model family 'nope'; valid names: bert, dit, gpt2, llama$"
    ):
        get_family("nope")
    with pytest.raises(
        ValueError,
        match=r"^unsupported model family 'nope'; supported model_type: bert, dit, gpt2, llama, mistral, qwen2$",
    ):
        get_family(SimpleNamespace(model_type="nope"))


@pytest.mark.parametrize("name", list_families())
def test_every_registered_family_is_complete(name: str) -> None:
    family = get_family(name)
    assert isinstance(family, Family) and family.name == name
    assert family.model_types and isinstance(family.causal, bool)
    others = {t for f in families.FAMILIES if f is not family for t in f.model_types}
    assert not others & set(family.model_types)
