"""The graft library: each piece equals what stage 1 of a plan with that operator alone gives,
assembled plans carry the pieces, and a saved library reloads exactly (safetensors) and only
for the host and space it was built for."""

from __future__ import annotations

import copy

import pytest
import torch

from grafting import stage1
from grafting.checkpoints import load_host
from grafting.data import batches
from grafting.plan import load_plan
from grafting.plan_search import library as lib
from grafting.plan_search.space import KEEP, GraftSpace
from grafting.surgery import graft

TEXTS = [
    "The river ran quietly past the old mill, where the miller's daughter sat reading.",
    "Children ran between the stalls while their parents argued about prices.",
    "When the storm came, it came quickly, and the streets were soon empty.",
    "A letter arrived on Tuesday, written in a careful, old-fashioned hand.",
    "Scholars have long debated the origins of the village and its first mill.",
    "The next morning was bright and clear, and puddles shone on the road.",
]
SPACE = {
    "name": "tiny",
    "layers": "all",
    "slots": {
        "mixer": {
            "linear": {"name": "linear", "feature_map": "hedgehog"},
            "swa": {"name": "sliding_window", "window": 4, "block_size": 4},
        },
        "mlp": {"narrow": {"name": "host", "host_fraction": 0.5}},
    },
}
STAGE1 = {"steps": 6, "lr": 3e-3, "loss": "l2"}


@pytest.fixture(scope="module")
def built(tiny_models):
    host = load_host(tiny_models["bert"])
    host.model.requires_grad_(False)
    data = batches(host.tokenizer, TEXTS, 2, 64)  # padded batches: masks reach every piece
    space = GraftSpace.from_dict(SPACE)
    return host, space, data, lib.build(host, space, data, STAGE1, progress=False, seed=3)


def test_every_piece_is_trained_and_equals_stage1_of_that_operator_alone(built):
    host, space, data, library = built
    assert set(library.pieces) == {
        (i, s, c) for i in (0, 1) for s, cands in space.candidates.items() for c in cands
    }
    assert library.meta["signature"] == space.signature(2)
    # the reference: an ordinary graft of linear attention into layer 1 only, stage 1 alone
    student = copy.deepcopy(host.model)
    wrappers = graft(
        student,
        host.family,
        load_plan({"grafts": [{"layers": [1], "mixer": SPACE["slots"]["mixer"]["linear"]}]}),
    )
    untrained = copy.deepcopy(wrappers[(1, "mixer")].op.state_dict())
    stage1.run(host.model, host.family, wrappers, data, STAGE1, False, 3)
    alone = wrappers[(1, "mixer")].op.state_dict()
    piece = library.pieces[(1, "mixer", "linear")]
    assert set(piece) == set(alone)
    for name in alone:
        torch.testing.assert_close(piece[name], alone[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(piece[n], untrained[n]) for n in piece)  # it did train


def test_assembled_plan_carries_the_pieces_and_leaves_kept_layers_alone(built):
    host, space, data, library = built
    choices = dict.fromkeys(space.keys(2), KEEP)
    choices[(0, "mixer")], choices[(1, "mlp")] = "swa", "narrow"
    student, wrappers, plan = lib.assemble(host, space, library, choices, "p")
    assert set(wrappers) == {(0, "mixer"), (1, "mlp")}
    for (i, slot), w in wrappers.items():
        for name, t in w.op.state_dict().items():
            torch.testing.assert_close(t, library.pieces[(i, slot, choices[(i, slot)])][name])
    kept = student.encoder.layer[1].attention.self.query.weight
    torch.testing.assert_close(kept, host.model.encoder.layer[1].attention.self.query.weight)
    assert student.encoder.layer[1].attention is not host.model.encoder.layer[1].attention
    with torch.no_grad():  # the host itself is untouched by assembly
        assert host.model(**data[0]).last_hidden_state.isfinite().all()
        assert student(**data[0]).last_hidden_state.isfinite().all()


def test_saved_library_reloads_exactly_and_only_for_its_space(built, tmp_path):
    host, space, _, library = built
    lib.save(library, tmp_path / "library")
    again = lib.load(tmp_path / "library", space, host)
    assert set(again.pieces) == set(library.pieces)
    for key, state in library.pieces.items():
        for name, t in state.items():
            assert torch.equal(again.pieces[key][name], t)
    other = GraftSpace.from_dict({**SPACE, "layers": [0]})
    with pytest.raises(ValueError, match="was built for"):
        lib.load(tmp_path / "library", other, host)
    with pytest.raises(FileNotFoundError, match="not a graft library"):
        lib.load(tmp_path, space, host)
