"""Grafting a DiT: the family maps the original layout onto the operators exactly (a softmax
self-graft changes nothing), stage 1 sees noised images with their true t and class, the captured
pairs are the replaced module's, and ``python -m grafting.graft`` runs end to end, writes the
grids and the report, and ``grafting.load`` rebuilds the result."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

import grafting
from grafting import stage1
from grafting.dit.data import digits
from grafting.dit.diffusion import GaussianDiffusion
from grafting.dit.graft import calibration, is_dit
from grafting.dit.train import main as train_main
from grafting.families import get_family
from grafting.graft import main as graft_main
from grafting.plan import GraftPlan, load_plan
from grafting.surgery import graft
from tests.grafting.dit.tiny import dit_inputs, random_dit

DIT_PLANS = [
    "dit_gated_conv_50",
    "dit_swa_50",
    "dit_linear_50",
    "dit_mlp_half",
    "dit_softmax_fresh_50",
]


def test_softmax_self_graft_is_exact():
    model = random_dit()
    x, t, y = dit_inputs()
    plan = GraftPlan.from_dict(
        {
            "name": "self",
            "grafts": [{"layers": "all", "mixer": {"name": "softmax"}, "mlp": {"name": "host"}}],
        }
    )
    student = copy.deepcopy(model)
    graft(student, get_family(model.config), plan)
    with torch.no_grad():
        assert torch.equal(student(x, t, y), model(x, t, y))


@pytest.mark.parametrize("plan", DIT_PLANS)
def test_dit_plans_graft_the_odd_or_all_blocks(plan):
    model = random_dit()
    student = copy.deepcopy(model)
    wrappers = graft(student, get_family(model.config), load_plan(plan))
    layers = {i for i, _ in wrappers}
    assert layers == ({0, 1} if plan == "dit_mlp_half" else {1})
    x, t, y = dit_inputs()
    with torch.no_grad():
        out = student(x, t, y)
    assert out.shape == model(x, t, y).shape and torch.isfinite(out).all()


def test_calibration_noises_images_with_their_true_t_and_class():
    diffusion = GaussianDiffusion(learn_sigma=True)
    batches = calibration(diffusion, 40, 16, seed=0)
    assert [len(b["x"]) for b in batches] == [16, 16, 8]
    x0, y0 = digits("train")
    t = torch.cat([b["t"] for b in batches])
    y = torch.cat([b["y"] for b in batches])
    assert t.max() > 100 and t.min() >= 0 and t.max() < 1000  # timesteps, not labels
    assert y.max() < 10 and set(y.tolist()) <= set(y0.tolist())  # labels, not timesteps
    # x_t = sqrt(a) x0 + sqrt(1 - a) eps: recover x0's index from the seeded draw
    g = torch.Generator().manual_seed(0)
    index = torch.randperm(len(x0), generator=g)[:40]
    assert torch.equal(y, y0[index])
    a = diffusion.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x = torch.cat([b["x"] for b in batches])
    noise = (x - a.sqrt() * x0[index]) / (1 - a).sqrt()
    assert abs(float(noise.std()) - 1) < 0.1  # what is left is unit Gaussian noise
    assert not torch.allclose(x, x0[index], atol=0.1)  # noised, not clean


def test_capture_records_the_replaced_modules_input_and_output(tmp_path):
    model = random_dit()
    family = get_family(model.config)
    batches = calibration(GaussianDiffusion(), 8, 4, seed=0)
    keys = [(1, "mixer"), (0, "mlp")]
    files = stage1.capture(model, family, keys, batches, tmp_path)
    from safetensors.torch import load_file

    data = load_file(str(files[0]))
    assert data["attention_mask"].shape == (4, 64) and bool(data["attention_mask"].all())
    with torch.no_grad():
        assert torch.allclose(model.blocks[1].attn(data["1.mixer.x"]), data["1.mixer.y"])
        assert torch.allclose(model.blocks[0].mlp(data["0.mlp.x"]), data["0.mlp.y"])


def test_slot_losses():
    assert stage1.slot_losses("l2") == {"mixer": "l2", "mlp": "l2"}
    assert stage1.slot_losses({"mixer": "l1", "mlp": "l2"}) == {"mixer": "l1", "mlp": "l2"}
    with pytest.raises(ValueError, match="every slot"):
        stage1.slot_losses({"mixer": "l1"})
    with pytest.raises(ValueError, match="one of"):
        stage1.slot_losses({"mixer": "l3", "mlp": "l2"})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("dit") / "teacher"
    argv = ["model.depth=2", "model.hidden_size=32", "model.num_heads=2", "steps=4", "batch_size=8"]
    assert (
        train_main([f"out={out}", *argv, "grid.per_class=1", "grid.steps=2", "progress=false"]) == 0
    )
    return out


TINY = [
    "stage1.steps=3",
    "stage2.steps=2",
    "data.calib_images=32",
    "data.batch_size=8",
    "report.eval_per_class=3",
    "report.grid_per_class=2",
    "report.sample_steps=2",
    "report.latency_batch=2",
    "report.rounds=1",
    "report.min_run_time=0.01",
    "progress=false",
    "threads=1",
]


def test_graft_cli_end_to_end_and_reload(teacher, tmp_path, capsys):
    assert is_dit(teacher) and not is_dit(tmp_path)
    out = tmp_path / "out"
    argv = [f"base={teacher}", "plan=dit_gated_conv_50", f"out={out}", *TINY]
    assert graft_main(argv) == 0
    printed = capsys.readouterr().out
    assert "Fréchet" in printed and "sampling step" in printed and "% of the teacher's" in printed
    report = json.loads((out / "report.json").read_text())
    q = report["quality"]
    assert {"teacher", "grafted", "heldout_real"} <= set(q) and q["frechet_ratio"] > 0
    assert [r["t"] for r in report["denoising_loss"]] == [50, 250, 500, 750, 950]
    assert report["stage1"]["steps"] == 3 and report["stage2"]["steps"] == 2
    assert 0 < report["compute"]["fraction"]
    for name in ("teacher.png", "grafted.png", "side_by_side.png", "plan.yaml", "config.json"):
        assert (out / name).is_file()
    model = grafting.load(out)
    assert type(model).__name__ == "DiT" and type(model.blocks[1].attn).__name__ == "TokenMixer"
    x, t, y = dit_inputs(2)
    with torch.no_grad():
        assert torch.isfinite(model(x, t, y)).all()
    from grafting.export import main as export_main

    exported = tmp_path / "export"
    assert export_main([f"run={out}", f"out={exported}"]) == 0
    for name in (
        "model.onnx",
        "reference.safetensors",
        "export.json",
        "README.md",
        "side_by_side.png",
    ):
        assert (exported / name).is_file()
    assert json.loads((exported / "export.json").read_text())["onnx"]["onnx_max_abs_diff"] < 1e-3
    card = (exported / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n", 2)[1])  # Hub metadata: the teacher, tags, quality
    assert card.startswith("---\n") and meta["base_model"] == report["base"]
    assert {"grafted", "dit"} <= set(meta["tags"])
    assert meta["graft"]["quality"]["grafted"] == q["grafted"]
    with torch.no_grad():
        assert torch.equal(grafting.load(exported)(x, t, y), model(x, t, y))
    before = (out / "grafted.safetensors").read_bytes()
    assert graft_main(argv) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert (out / "grafted.safetensors").read_bytes() == before


def test_parallel_pairs_start_as_the_sum_of_both_blocks_updates():
    from grafting.dit.parallel import halve_depth

    model = random_dit()  # depth 2: one pair
    x, t, y = dit_inputs()
    with torch.no_grad():
        h = model.x_embedder(x) + model.pos_embed
        c = model.t_embedder(t) + model.y_embedder(y, False)
        a, b = model.blocks
        ref = model.unpatchify(model.final_layer(a(h, c) + b(h, c) - h, c))
        student = copy.deepcopy(model)
        pairs = halve_depth(student)
        assert len(student.blocks) == len(pairs) == 1
        assert torch.allclose(student(x, t, y), ref, atol=1e-5)


def test_parallel_pairs_cli_and_reload(teacher, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert graft_main([f"base={teacher}", "plan=dit_parallel_pairs", f"out={out}", *TINY]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["grafted"] == ["0+1:parallel_pair"] and report["stage1"]["steps"] == 3
    model = grafting.load(out)
    assert len(model.blocks) == 1 and type(model.blocks[0]).__name__ == "ParallelPair"
    x, t, y = dit_inputs(2)
    with torch.no_grad():
        assert torch.isfinite(model(x, t, y)).all()
