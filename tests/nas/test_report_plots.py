"""The report's plots (``pareto.png``, ``pareto.html``) and the study's objective names."""

from __future__ import annotations

import random
import warnings

import optuna
from optuna.trial import TrialState, create_trial

from nas.plots import MAX_MIXES, mix_of, points, write_plots
from nas.report import member
from nas.study import open_study, pareto_trials
from search_spaces.space import load_space

NAMES = ["val loss", "latency / baseline"]


def attrs(arch, metric: float, ratio: float, **extra) -> dict:
    """The user attributes ``nas.study.Scorer`` stores on a trial."""
    return {
        "arch": arch.to_dict(),
        "signature": arch.signature,
        "val_metric": metric,
        "latency_ms": 10 * ratio,
        "latency_ratio": ratio,
        "latency_source": "measured",
        "params": 1000,
        "flops": 2000,
        **extra,
    }


def add(study: optuna.Study, arch, metric: float, ratio: float, constraints=None, **extra) -> None:
    user_attrs = attrs(arch, metric, ratio, **extra)
    study.add_trial(
        create_trial(values=[metric, ratio], user_attrs=user_attrs, constraints=constraints)
    )


def small_study(space_name: str = "efficient_attn", n: int = 8) -> optuna.Study:
    """A baseline (trial 0), ``n`` sampled archs, one infeasible and one failed trial."""
    space = load_space(space_name)
    study = optuna.create_study(directions=["minimize", "minimize"], study_name="probe")
    add(study, space.baseline(), 2.0, 1.0, reference="baseline")
    rng = random.Random(0)
    for seed in range(n):
        add(study, space.sample(seed), rng.uniform(1.8, 2.6), rng.uniform(0.3, 1.4))
    add(study, space.sample(n), 1.0, 0.2, constraints={"params": 5.0})  # best, but infeasible
    study.add_trial(create_trial(state=TrialState.FAIL))
    return study


def test_plots_mark_the_front_and_the_baseline_and_stay_small(tmp_path) -> None:
    study = small_study()
    baseline = member(study.trials[0], 2.0, None, "minimize")
    front = [member(t, t.values[0], baseline, "minimize") for t in pareto_trials(study)]
    assert len(front) >= 2

    png, html = write_plots(study, tmp_path, "loss", "minimize", front, baseline)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = html.read_text()
    assert html.stat().st_size < 500_000, html.stat().st_size
    assert "cdn.plot.ly" in text and '"baseline"' in text
    labelled = {m.trial for m in front} - {baseline.trial}
    for n in labelled:  # a text label, not only hover text ("trial #N ...")
        assert f'"#{n}"' in text, n
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        if t.number not in labelled:
            assert f'"#{t.number}"' not in text, t.number
    assert "infeasible" in text and "lower is better" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.html", "pareto.png"]


def test_the_legend_of_operator_mixes_stays_short() -> None:
    space = load_space("hybrid")  # nine mixers: dozens of distinct mixes
    assert mix_of(space.baseline()) == "softmax only"
    study = small_study("hybrid", n=60)
    baseline = member(study.trials[0], 2.0, None, "minimize")
    pts, mixes = points(study, "loss", [], baseline)
    assert len({mix_of(space.sample(s)) for s in range(60)}) > MAX_MIXES + 1
    assert len(mixes) <= MAX_MIXES + 1 and mixes[-1] == "other mixes"
    assert {p.mix for p in pts if p.trial != baseline.trial} == set(mixes)


def test_open_study_names_the_objectives_without_a_warning(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sampler = optuna.samplers.RandomSampler()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study, created = open_study(url, "s", "minimize", sampler, metric_names=NAMES)
    assert study.metric_names == NAMES and created
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert open_study(url, "s", "minimize", sampler)[0].metric_names == NAMES  # None keeps them
    assert (
        open_study(f"sqlite:///{tmp_path / 'bare.db'}", "s", "minimize", sampler)[0].metric_names
        is None
    )
