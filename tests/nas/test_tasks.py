"""Tasks: MQAR data is deterministic and well-formed, the metric scores only queries, and
``get_task`` resolves names, configs and users' own classes."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from nas.tasks import (
    IGNORE_INDEX,
    MQAR,
    Task,
    get_task,
    get_task_class,
    list_tasks,
    register_task,
)
from nas.tasks.base import TASKS
from search_spaces import Arch, HeadSpec, build_model

SMALL = {
    "vocab_size": 64,
    "seq_len": 48,
    "num_pairs": 8,
    "num_train": 300,
    "num_val": 100,
    "num_test": 100,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def task() -> MQAR:
    return MQAR(**SMALL, seed=3)


def test_generation_is_deterministic_and_splits_differ(task: MQAR) -> None:
    again = MQAR(**SMALL, seed=3)
    for split in ("train", "val", "test"):
        for key in ("inputs", "targets"):
            assert torch.equal(task.split(split)[key], again.split(split)[key])
    first = {s: task.split(s)["inputs"][:100] for s in ("train", "val", "test")}
    assert not torch.equal(first["train"], first["val"])
    assert not torch.equal(first["val"], first["test"])
    other_seed = MQAR(**SMALL, seed=4).split("train")["inputs"]
    assert not torch.equal(task.split("train")["inputs"], other_seed)
    # chunked generation: more rows than one chunk stays deterministic and rows stay distinct
    big = MQAR(**{**SMALL, "num_train": 2500}).split("train")["inputs"]
    assert torch.equal(big, MQAR(**{**SMALL, "num_train": 2500}).split("train")["inputs"])
    assert len(torch.unique(big, dim=0)) == 2500


def test_sequences_are_well_formed(task: MQAR) -> None:
    data = task.split("train")
    inputs, targets = data["inputs"], data["targets"]
    V, P, half = task.vocab_size, task.num_pairs, task.vocab_size // 2
    assert inputs.shape == targets.shape == (SMALL["num_train"], SMALL["seq_len"])
    keys, values = inputs[:, 0 : 2 * P : 2], inputs[:, 1 : 2 * P : 2]  # (N, P) each
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < V)).all()
    assert all(len(set(row.tolist())) == P for row in keys)  # keys distinct per sequence
    assert (targets[:, : 2 * P] == IGNORE_INDEX).all()  # nothing scored inside the pairs
    for x, y, k, v in zip(inputs, targets, keys, values, strict=True):
        where = (y != IGNORE_INDEX).nonzero().flatten()
        assert len(where) == task.num_queries
        pairs = dict(zip(k.tolist(), v.tolist(), strict=True))
        for pos in where.tolist():
            assert x[pos].item() in pairs  # a key that appeared among the pairs
            assert y[pos].item() == pairs[x[pos].item()]  # its target is the paired value
        rest = torch.ones_like(x, dtype=torch.bool)
        rest[: 2 * P], rest[where] = False, False
        assert (x[rest] == 0).all()  # everything else is filler
        assert len(set(x[where].tolist())) == len(where)  # each pair queried at most once


def test_datamodule_batches(task: MQAR) -> None:
    dm = task.datamodule()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"inputs", "targets"}
    for value in batch.values():
        assert value.shape == (SMALL["batch_size"], SMALL["seq_len"]) and value.dtype == torch.long
    val = list(task.datamodule(batch_size=40).val_dataloader())
    assert [len(b["inputs"]) for b in val] == [40, 40, 20]
    assert torch.equal(torch.cat([b["inputs"] for b in val]), task.split("val")["inputs"])
    # training order is shuffled, and the same for the same seed
    again = next(iter(MQAR(**SMALL, seed=3).datamodule().train_dataloader()))
    assert torch.equal(batch["inputs"], again["inputs"])
    assert not torch.equal(batch["inputs"], task.split("train")["inputs"][: SMALL["batch_size"]])


def one_hot_logits(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return nn.functional.one_hot(tokens.clamp_min(0), vocab).float()  # (B, L, V)


def test_metric_counts_only_query_positions(task: MQAR) -> None:
    batch = next(iter(task.datamodule().val_dataloader()))
    targets, V = batch["targets"], task.vocab_size
    right = one_hot_logits(targets, V)  # right at queries, predicts token 0 elsewhere
    num, count = task.metric_counts(right, batch)
    assert count == int((targets != IGNORE_INDEX).sum()) == len(targets) * task.num_queries
    assert num == count
    shifted = one_hot_logits(targets.roll(1, dims=1), V)  # right answers, one position late
    num, _ = task.metric_counts(shifted, batch)
    assert num / count < 0.05
    assert task.loss(right * 50, batch) < 1e-3 < task.loss(shifted * 50, batch)


class Oracle(nn.Module):
    """Looks up each query key among the pairs of its own sequence (what recall should do)."""

    def __init__(self, num_pairs: int, vocab: int) -> None:
        super().__init__()
        self.num_pairs, self.vocab = num_pairs, vocab
        self.dummy = nn.Parameter(torch.zeros(()))  # so evaluate can find a device and mode

    def forward(self, inputs: torch.Tensor, *, padding_mask=None) -> torch.Tensor:
        P = self.num_pairs
        keys, values = inputs[:, 0 : 2 * P : 2], inputs[:, 1 : 2 * P : 2]  # (B, P)
        match = inputs[:, :, None] == keys[:, None, :]  # (B, L, P)
        answer = (match * values[:, None, :]).sum(-1)  # (B, L); 0 where no key matches
        return one_hot_logits(answer, self.vocab) + self.dummy


def test_evaluate_oracle_is_perfect_and_restores_mode(task: MQAR) -> None:
    oracle = Oracle(task.num_pairs, task.vocab_size).train()
    assert task.evaluate(oracle, task.datamodule().test_dataloader()) == 1.0
    assert oracle.training
    assert task.evaluate(oracle, task.datamodule().val_dataloader(), max_batches=1) == 1.0
    with pytest.raises(ValueError, match="no scored positions"):
        task.evaluate(oracle, task.datamodule().val_dataloader(), max_batches=0)


def test_head_model_and_latency_input(task: MQAR) -> None:
    head = task.head()
    assert head == HeadSpec(kind="lm", vocab_size=64, max_len=2048)
    layer = {"mixer": {"name": "softmax", "heads": 2}, "channel": "mlp", "norm": "layernorm"}
    arch = Arch.from_dict({"dim": 32, "head_dim": 16, "head": head.to_dict(), "layers": [layer]})
    model = build_model(arch)
    batch = next(iter(task.datamodule().train_dataloader()))
    loss = task.loss(task.run_model(model, batch), batch)
    assert loss.ndim == 0 and abs(loss.item() - torch.log(torch.tensor(64.0)).item()) < 0.5
    x = task.example_input()
    assert x.shape == task.latency_shape == (1, 2048) and x.dtype == torch.long
    assert 0 <= x.min() and x.max() < 64
    assert task.example_input((2, 16)).shape == (2, 16)
    with torch.inference_mode():
        assert model(task.example_input((1, 300))).shape == (1, 300, 64)


def test_defaults_match_the_config_file() -> None:
    from search_spaces.config_paths import find_config

    conf = OmegaConf.load(find_config("task", "mqar"))
    defaults = MQAR().to_config()
    assert get_task(conf).to_config() == defaults
    assert conf.num_queries is None and defaults["num_queries"] == defaults["num_pairs"]
    assert OmegaConf.to_container(conf) == {**defaults, "num_queries": None}


def test_invalid_parameters_name_the_field() -> None:
    with pytest.raises(ValueError, match="num_pairs"):
        MQAR(vocab_size=16, num_pairs=8)
    with pytest.raises(ValueError, match="num_queries"):
        MQAR(num_pairs=4, num_queries=5)
    with pytest.raises(ValueError, match="seq_len"):
        MQAR(seq_len=20, num_pairs=8)
    with pytest.raises(ValueError, match="batch_size"):
        MQAR(batch_size=0)


class CountingTask(Task):
    """A user's own task, loaded by dotted path (never registered)."""

    name = "counting"
    metric_name = "accuracy"
    direction = "maximize"

    def __init__(self, *, length: int = 8, seed: int = 0) -> None:
        self.length, self.seed = length, seed

    def head(self) -> HeadSpec:
        return HeadSpec(kind="lm", vocab_size=self.length, max_len=self.length)

    def datamodule(self, batch_size: int | None = None):
        raise NotImplementedError

    def metric_counts(self, outputs, batch) -> tuple[float, int]:
        return 0.0, 1


def test_get_task_by_name_mapping_and_target() -> None:
    assert "mqar" in list_tasks()
    assert isinstance(get_task("mqar"), MQAR)
    assert get_task("mqar").to_config() == MQAR().to_config()
    t = get_task({"name": "mqar", "num_pairs": 4, "seq_len": 32})
    assert (t.num_pairs, t.num_queries, t.seq_len) == (4, 4, 32)
    assert get_task(OmegaConf.create({"name": "mqar", "seed": 7})).seed == 7
    assert get_task(t) is t
    user = get_task({"target": f"{__name__}.CountingTask", "length": 5})
    assert isinstance(user, CountingTask) and user.length == 5
    assert isinstance(get_task({"target": f"{__name__}:CountingTask"}), CountingTask)
    assert get_task(user.to_config()).to_config() == user.to_config()
    rebuilt = get_task(t.to_config())
    assert rebuilt.to_config() == t.to_config()


def test_get_task_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'nope'; valid names: .*mqar"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*mqar"):
        get_task({"name": "nope"})
    with pytest.raises(ValueError, match="no parameter 'pairs'.*num_pairs"):
        get_task({"name": "mqar", "pairs": 3})
    with pytest.raises(ValueError, match="cannot load") as info:
        get_task({"target": f"{__name__}.Missing"})
    assert "\n" not in str(info.value)  # hydra's get_class explains over several lines
    with pytest.raises(ValueError, match="cannot load .*no_such_module"):
        get_task({"target": "no_such_module.Task"})
    with pytest.raises(ValueError, match="cannot load .*non-class"):
        get_task({"target": f"{__name__}.one_hot_logits"})
    with pytest.raises(ValueError, match="dotted path"):
        get_task({"target": "CountingTask"})
    with pytest.raises(ValueError, match="not a subclass"):
        get_task({"target": "torch.nn.Linear"})


def test_register_task_makes_a_class_available_by_name() -> None:
    class Registered(CountingTask):
        pass

    try:
        assert register_task("counting_registered")(Registered) is Registered
        assert Registered.name == "counting_registered"
        assert "counting_registered" in list_tasks()
        assert get_task_class("counting_registered") is Registered
        task = get_task({"name": "counting_registered", "length": 3})
        assert isinstance(task, Registered) and task.length == 3
        assert "target" not in task.to_config()  # registered: found again by name
        assert get_task(task.to_config()).to_config() == task.to_config()
        with pytest.raises(ValueError, match="already registered"):
            register_task("counting_registered")(CountingTask)
    finally:
        TASKS.remove("counting_registered")
    with pytest.raises(
        ValueError,
        match=r"^unknown task 'counting_registered'; valid names: charlm, digits, listops, mqar$",
    ):
        get_task_class("counting_registered")


# -- the contract, for every registered task ------------------------------------------------------
# Small settings per task so the contract checks stay fast; a newly registered task must add one.
SMALL_CONFIGS = {
    "mqar": {**SMALL, "seed": 1},
    "listops": {"min_length": 12, "max_length": 48, "num_train": 96, "num_val": 40, "num_test": 40},
    "charlm": {"texts": ["alice_in_wonderland"], "seq_len": 48},
    "digits": {"patch_size": 2},
}


def test_every_registered_task_has_small_settings() -> None:
    assert sorted(SMALL_CONFIGS) == list_tasks()


@pytest.fixture(scope="module", params=list_tasks())
def any_task(request) -> Task:
    return get_task({"name": request.param, **SMALL_CONFIGS.get(request.param, {})})


def test_contract_defaults_match_the_config_file(any_task: Task) -> None:
    from search_spaces.config_paths import find_config

    conf = OmegaConf.load(find_config("task", any_task.name))
    defaults = type(any_task)().to_config()
    assert get_task(conf).to_config() == defaults
    assert set(conf) == set(defaults)  # every parameter is in the file, nothing else
    assert type(any_task).direction in ("maximize", "minimize") and any_task.metric_name


def test_contract_config_round_trip(any_task: Task) -> None:
    config = any_task.to_config()
    assert get_task(config).to_config() == config
    assert get_task(OmegaConf.create(config)).to_config() == config


def test_contract_splits_are_deterministic_and_differ(any_task: Task) -> None:
    again = get_task(any_task.to_config())
    splits = {s: any_task.split(s) for s in ("train", "val", "test")}
    for name, data in splits.items():
        assert data.keys() == again.split(name).keys() and "inputs" in data and "targets" in data
        for key, value in data.items():
            assert torch.equal(value, again.split(name)[key])
            assert len(value) == len(data["inputs"]) > 0
    assert not torch.equal(splits["val"]["inputs"][:8], splits["test"]["inputs"][:8])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        any_task.split("dev")


def test_contract_batches_model_metric_and_latency_input(any_task: Task) -> None:
    torch.manual_seed(0)
    dm = any_task.datamodule(batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    head = any_task.head()
    inputs, targets = batch["inputs"], batch["targets"]
    assert len(inputs) == len(targets) == 8 and targets.dtype == torch.long
    if head.kind == "image_cls":
        assert inputs.shape[1:] == (head.in_chans, head.image_size, head.image_size)
    else:
        assert inputs.dtype == torch.long and 0 <= inputs.min() and inputs.max() < head.vocab_size
    if "padding_mask" in batch:
        assert (
            batch["padding_mask"].dtype == torch.bool
            and batch["padding_mask"].shape == inputs.shape
        )
    scored = targets[targets != IGNORE_INDEX]
    classes = head.vocab_size if head.kind == "lm" else head.num_classes
    assert len(scored) > 0 and 0 <= scored.min() and scored.max() < classes

    layer = {"mixer": {"name": "softmax", "heads": 2}, "channel": "mlp", "norm": "layernorm"}
    arch = Arch.from_dict(
        {
            "dim": 32,
            "head_dim": 16,
            "head": head.to_dict(),
            "layers": [layer],
            "pos_embedding": "learned",
        }
    )
    model = build_model(arch)
    outputs = any_task.run_model(model, batch)
    before = {k: v.clone() for k, v in batch.items()}
    num, count = any_task.metric_counts(outputs, batch)
    assert all(torch.equal(v, batch[k]) for k, v in before.items())  # batch not mutated
    assert count == len(scored)
    # the exact numerator on hand-made outputs: logit 3 on one class, wrong at every other scored
    # position (bits per character then has a closed form: log(1 + (C-1)/e^3) or log(e^3 + C-1))
    is_scored = targets != IGNORE_INDEX
    wrong = is_scored & (is_scored.flatten().cumsum(0).view_as(targets) % 2 == 0)
    guess = torch.where(wrong, (targets + 1) % classes, targets.clamp_min(0))
    num, count = any_task.metric_counts(3.0 * one_hot_logits(guess, classes), batch)
    n_wrong = int(wrong.sum())
    n_right = count - n_wrong
    assert count == len(scored) and 0 < n_wrong < count
    nats = n_right * math.log1p((classes - 1) * math.exp(-3)) + n_wrong * math.log(
        math.exp(3) + classes - 1
    )
    expected = {"accuracy": n_right, "bpc": nats / math.log(2)}[any_task.metric_name]
    assert num == pytest.approx(expected, rel=1e-5)

    # a few steps on one batch: the loss must fall (the task's data and loss are learnable)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = any_task.loss(any_task.run_model(model, batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]

    model.train()
    value = any_task.evaluate(model, dm.val_dataloader(), max_batches=2)
    assert model.training and value == value  # mode restored, not NaN
    shape = any_task.latency_shape if head.kind == "image_cls" else (1, 300)
    x = any_task.example_input(shape)
    assert x.shape == tuple(shape)
    with torch.inference_mode():
        assert model(x).shape[0] == 1
