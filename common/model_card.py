"""``README.md`` model cards with Hugging Face Hub metadata, on ``huggingface_hub.ModelCard``.

A card is a YAML front matter built by ``huggingface_hub.ModelCardData`` (``base_model``,
``tags``, ``pipeline_tag``, evaluation results as ``model-index``, and custom fields) followed
by a Markdown body rendered from a Jinja template string. Everything is local: nothing is
validated against or pushed to the Hub. ``nas.model_card`` and ``grafting.model_card`` (and the
DiT card of ``grafting.dit.export``) hold the templates and choose the numbers.

Templates are rendered with ``trim_blocks`` and ``lstrip_blocks`` (a line holding only a
``{% ... %}`` tag leaves nothing behind), undefined names raise, and two helpers are available:
the filter ``fmt`` (``{{ x | fmt(".3g") }}`` is ``format(x, ".3g")``) and the function
``table(header, rows)`` (a Markdown table; floats with 6 significant digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData


def _cell(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: the header, the separator and one line per row."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


# hand-made environment, not ModelCard.from_template's bare jinja2.Template: that one renders an
# undefined name as an empty string and drops the template's final newline
_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
_ENV.filters["fmt"] = format
_ENV.globals["table"] = table


def eval_result(task: str, dataset: str, metric: str, value: Any, **extra: Any) -> EvalResult:
    """One ``model-index`` entry: ``metric`` = ``value`` for ``task`` on ``dataset`` (its
    identifier doubles as its name unless ``dataset_name`` is given)."""
    extra.setdefault("dataset_name", dataset)
    return EvalResult(
        task_type=task, dataset_type=dataset, metric_type=metric, metric_value=value, **extra
    )


def card_data(
    *,
    model_name: str,
    tags: Sequence[str],
    base_model: str | None = None,
    pipeline_tag: str | None = None,
    eval_results: Sequence[EvalResult] = (),
    **custom: Any,
) -> ModelCardData:
    """The front matter's metadata; ``custom`` fields are written as they are (None ones are
    left out)."""
    return ModelCardData(
        model_name=model_name,
        base_model=base_model,
        tags=list(tags),
        pipeline_tag=pipeline_tag,
        eval_results=list(eval_results) or None,
        **custom,
    )


def render_card(data: ModelCardData, template: str, **context: Any) -> str:
    """The card's text: ``data`` as YAML front matter, then ``template`` rendered with
    ``context`` (and the helpers of the module doc)."""
    body = _ENV.from_string(template).render(**context)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
