"""Samplers are config: every ``conf/search_samplers/*.yaml`` builds the Optuna sampler it names, seeded
with the run's seed and equal to the one the search used to construct in code; a user's own
sampler file is found in a ``NAS_CONFIG_PATH`` directory; bad names and files are one line."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from nas.search import validate
from nas.study import make_sampler, sampler_names
from nas.tasks import get_task
from search_spaces.cli import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "search_samplers"

# what each shipped file must build (seed, n_trials): the settings nas.study had in code
EXPECTED = {
    "tpe": lambda seed, n: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
    "nsga2": lambda seed, n: optuna.samplers.NSGAIISampler(
        population_size=max(4, n // 4), seed=seed
    ),
    "random": lambda seed, n: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed, n: optuna.samplers.GPSampler(seed=seed),
}


@pytest.fixture(autouse=True)
def no_user_configs(monkeypatch) -> None:
    monkeypatch.delenv("NAS_CONFIG_PATH", raising=False)


def proposals(sampler: optuna.samplers.BaseSampler, trials: int = 3) -> list[dict]:
    """The parameters ``sampler`` proposes in a small two-objective study (as the search's)."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 9)), trials)
    return [t.params for t in study.trials]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_every_sampler_config_builds_its_optuna_sampler_with_the_seed(name: str) -> None:
    assert name in EXPECTED, f"conf/search_samplers/{name}.yaml is new: add what it must build here"
    sampler, expected = make_sampler(name, 3, 40), EXPECTED[name](3, 40)
    assert type(sampler) is type(expected)
    settings = ("_multivariate", "_group", "_population_size")
    assert {k: v for k, v in vars(sampler).items() if k in settings} == {
        k: v for k, v in vars(expected).items() if k in settings
    }
    first = proposals(sampler)
    assert first == proposals(EXPECTED[name](3, 40))  # the seed reached the sampler
    assert first != proposals(make_sampler(name, 4, 40))


def test_the_shipped_samplers_are_the_names_offered() -> None:
    assert sampler_names() == sorted(EXPECTED)


def test_nsga2_population_from_the_setting_the_file_or_the_budget(tmp_path) -> None:
    assert make_sampler("nsga2", 0, 40)._population_size == 10
    assert make_sampler("nsga2", 0, 8)._population_size == 4  # at least 4
    assert make_sampler("nsga2", 0, 40, population_size=6)._population_size == 6
    own = tmp_path / "nsga2_12.yaml"
    own.write_text("_target_: optuna.samplers.NSGAIISampler\npopulation_size: 12\nseed: ${seed}\n")
    assert make_sampler(str(own), 0, 40)._population_size == 12
    assert make_sampler(str(own), 0, 40, population_size=6)._population_size == 6


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # QMC
def test_a_user_sampler_in_nas_config_path_is_found(tmp_path, monkeypatch) -> None:
    (tmp_path / "search_samplers").mkdir()
    (tmp_path / "search_samplers" / "qmc.yaml").write_text(
        "_target_: optuna.samplers.QMCSampler\nqmc_type: halton\nscramble: true\nseed: ${seed}\n"
    )
    monkeypatch.setenv("NAS_CONFIG_PATH", str(tmp_path))
    assert "qmc" in sampler_names() and "tpe" in sampler_names()
    sampler = make_sampler("qmc", 5, 40)
    assert isinstance(sampler, optuna.samplers.QMCSampler) and sampler._seed == 5
    # and through the command line's config: `search.sampler=qmc` passes the search's checks
    cfg = compose_config("search", ["+space=efficient_attn", "search.sampler=qmc"])
    validate(cfg, get_task(cfg.task))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("_target_: optuna.samplers.TPESampler\nbogus: 1\n", "does not build: .*bogus"),
        ("_target_: optuna.samplers.NoSuchSampler\n", "does not build: .*NoSuchSampler"),
        ("_target_: collections.OrderedDict\n", "builds a OrderedDict, not an Optuna sampler"),
        ("_target_: optuna.samplers.RandomSampler\nseed: ${search.seed}\n", "does not build"),
        ("seed: 1\n", "needs `_target_"),
    ],
)
def test_a_sampler_file_that_does_not_build_is_one_line(tmp_path, content, message) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"^search\.sampler={path}: .*{message}") as info:
        make_sampler(str(path), 0, 10)
    assert "\n" not in str(info.value)


def test_an_unknown_sampler_lists_the_names() -> None:
    with pytest.raises(ValueError, match=r"search.sampler must be one of gp, nsga2, random, tpe"):
        make_sampler("bogus", 0, 10)
