"""Model cards on ``huggingface_hub.ModelCard``: YAML front matter from ``ModelCardData`` (with
evaluation results as ``model-index`` and custom fields), a body from a Jinja template string."""

from __future__ import annotations

import jinja2
import pytest
import yaml
from huggingface_hub import ModelCard

from common.model_card import card_data, eval_result, render_card

TEMPLATE = """\
# {{ name }}

{{ table(["k", "v"], rows) }}
{% if notes %}

- {{ notes | join(", ") }}
{% endif %}
score {{ score | fmt(".3g") }}, params {{ params | fmt(",") }}
"""


def test_card_has_front_matter_and_the_rendered_body() -> None:
    data = card_data(
        model_name="m",
        base_model="org/host",
        tags=["grafted", "grafted", "efficient-attention"],
        eval_results=[
            eval_result("text-generation", "wiki", "perplexity", 12.5, dataset_split="test")
        ],
        graft={"plan": "linear_50"},
    )
    card = render_card(
        data,
        TEMPLATE,
        name="Title",
        rows=[["a", 0.1234567], ["b", 3]],
        notes=[],
        score=0.123456,
        params=1234567,
    )
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert meta["base_model"] == "org/host" and meta["tags"] == ["grafted", "efficient-attention"]
    assert meta["graft"] == {"plan": "linear_50"}
    (index,) = meta["model-index"]
    assert index["name"] == "m" and index["results"][0]["metrics"] == [
        {"type": "perplexity", "value": 12.5}
    ]
    body = card.split("---\n", 2)[2]
    assert (
        body
        == "\n# Title\n\n| k | v |\n|---|---|\n| a | 0.123457 |\n| b | 3 |\nscore 0.123, params 1,234,567\n"
    )
    assert ModelCard(card).data.base_model == "org/host"  # huggingface_hub reads it back


def test_undefined_names_raise() -> None:
    with pytest.raises(jinja2.UndefinedError, match="rows"):
        render_card(
            card_data(model_name="m", tags=[]), TEMPLATE, name="x", notes=[], score=1.0, params=1
        )
