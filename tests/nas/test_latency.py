"""Latency: inputs and shapes, the device fingerprint, the reference ratio, the SQLite cache
across processes, measured vs predicted modes, the lookup table, and the command line.

Tiny models and shapes with very short timing windows; no test asserts a timing."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml

from nas.latency import (
    LatencyCache,
    LatencyEstimator,
    LatencyRecord,
    LatencyTable,
    build_table,
    cached_latency,
    device_fingerprint,
    example_input,
    latency_arch,
    load_or_build_table,
    measure,
    measure_relative,
)
from nas.latency.__main__ import main
from nas.latency.predictor import op_key
from search_spaces import Arch, build_model
from search_spaces.space import SearchSpace

HEAD = {"kind": "lm", "vocab_size": 32, "max_len": 16}
SHAPE = (1, 24)  # longer than head.max_len: timed with max_len raised
FAST = {"threads": 1, "min_run_time": 0.002, "warmup": 1, "block_time": 0.001}
RELATIVE = {**FAST, "repeats": 3}


def tiny(mixer: dict, dim: int = 16, depth: int = 1) -> Arch:
    layer = {"mixer": mixer, "channel": {"name": "mlp", "ratio": 2}, "norm": "layernorm"}
    return Arch.from_dict({"dim": dim, "head_dim": 8, "head": HEAD, "layers": [layer] * depth})


ARCH = tiny({"name": "linear", "heads": 2, "feature_map": "elu1"})
REF = tiny({"name": "softmax", "heads": 2}, depth=2)
SPACE = {
    "name": "tiny",
    "head_dim": 8,
    "dim": [16, 24],
    "depth": [1, 2],
    "norm": ["layernorm"],
    "head": HEAD,
    "mixer": {"softmax": {"heads": [2]}, "linear": {"heads": [2], "feature_map": ["elu1"]}},
    "channel": {"mlp": {"ratio": [2]}},
    "references": {
        "baseline": {
            "dim": 16,
            "depth": 2,
            "mixer": {"name": "softmax", "heads": 2},
            "channel": {"name": "mlp", "ratio": 2},
        },
        "teacher": {
            "dim": 24,
            "depth": 2,
            "mixer": {"name": "softmax", "heads": 2},
            "channel": {"name": "mlp", "ratio": 2},
        },
        "smallest": {
            "dim": 16,
            "depth": 1,
            "mixer": {"name": "linear", "heads": 2, "feature_map": "elu1"},
            "channel": {"name": "mlp", "ratio": 2},
        },
    },
}


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(SPACE, source="tiny.yaml")


@pytest.fixture(scope="module")
def table(space: SearchSpace) -> LatencyTable:
    return build_table(space, SHAPE, threads=1, rounds=1, block_time=0.001)


# -- inputs, shapes, fingerprint ----------------------------------------------------------------
def test_example_input_and_latency_arch() -> None:
    tokens = example_input(ARCH, SHAPE)
    assert tokens.shape == SHAPE and tokens.dtype == torch.long
    assert 0 <= tokens.min() and tokens.max() < HEAD["vocab_size"]
    assert torch.equal(tokens, example_input(ARCH, SHAPE))  # deterministic
    raised = latency_arch(ARCH, SHAPE)
    assert raised.head.max_len == 24 and raised.layers == ARCH.layers
    assert latency_arch(ARCH, (2, 8)) is ARCH  # within max_len: unchanged
    image = Arch.from_dict(
        {
            **ARCH.to_dict(),
            "head": {
                "kind": "image_cls",
                "num_classes": 3,
                "image_size": 8,
                "patch_size": 4,
                "in_chans": 3,
            },
        }
    )
    assert example_input(image, (2, 3, 16, 16)).dtype == torch.float32
    assert latency_arch(image, (2, 3, 16, 16)).head.image_size == 16
    for bad_arch, bad_shape in ((ARCH, (1, 2, 3)), (ARCH, (1, 0)), (image, (1, 3, 16, 8))):
        with pytest.raises(ValueError, match="latency_shape"):
            example_input(bad_arch, bad_shape)


def test_fingerprint_is_stable_and_depends_on_threads() -> None:
    one, again, two = (device_fingerprint("cpu", t) for t in (1, 1, 2))
    assert one == again and one.key == again.key and len(one.key) == 12
    assert two.key != one.key and two.threads == 2
    assert one.to_dict()["torch"] == torch.__version__ and one.name
    assert device_fingerprint("cpu", 1, clock="cpu").key != one.key
    with pytest.raises(ValueError, match="device"):
        device_fingerprint("tpu")
    with pytest.raises(ValueError, match="threads=1"):  # CPU time of one thread only
        device_fingerprint("cpu", 2, clock="cpu")


# -- measurement --------------------------------------------------------------------------------
def test_measure_reports_counts_and_restores_mode() -> None:
    m = measure(ARCH, SHAPE, min_runs=3, **FAST)
    model = build_model(latency_arch(ARCH, SHAPE))
    assert m.runs >= 3 and m.median_ms > 0 and m.iqr_ms >= 0 and m.peak_bytes >= 0
    assert m.params == model.num_params() and m.flops == model.flops(SHAPE[1])
    assert m.shape == SHAPE and m.fingerprint == device_fingerprint("cpu", 1)
    model.train()
    m2 = measure(model, example_input(ARCH, (2, 24)), min_runs=1, **FAST)
    assert model.training and m2.flops == 2 * model.flops(24)
    m3 = measure(ARCH, SHAPE, min_runs=2, clock="cpu", **FAST)
    assert m3.runs >= 2 and m3.fingerprint.clock == "cpu"


def test_relative_ratio_is_the_median_round() -> None:
    rel = measure_relative(ARCH, REF, SHAPE, **RELATIVE)
    assert rel.rounds >= 3 and rel.candidate.runs == rel.reference.runs == rel.rounds
    assert rel.ratio == rel.candidate.median_ms / rel.reference.median_ms
    assert rel.reference.params == build_model(latency_arch(REF, SHAPE)).num_params()


# -- the cache across processes -----------------------------------------------------------------
def _measure_into(path: str) -> None:
    cached_latency(ARCH, REF, SHAPE, "cpu", LatencyCache(path), **RELATIVE)


needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)


@needs_fork
def test_cache_hit_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "latency.sqlite")
    # a forked child (one torch thread, as DataLoader workers) measures and writes the record
    child = multiprocessing.get_context("fork").Process(target=_measure_into, args=(path,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0 and len(LatencyCache(path)) == 1
    # found by the parent's own fingerprint key: the key is the same in both processes
    record, hit = cached_latency(ARCH, REF, SHAPE, "cpu", LatencyCache(path), **RELATIVE)
    assert hit and record.latency_source == "measured" and len(LatencyCache(path)) == 1
    assert record.ratio == record.ms / record.ref_ms
    assert record.arch == ARCH.signature and record.reference == REF.signature
    assert record.device == device_fingerprint("cpu", 1).key and record.shape == SHAPE
    assert record.fingerprint == device_fingerprint("cpu", 1).to_dict()
    # another thread count is another device: a miss
    assert LatencyCache(path).get(ARCH, REF, device_fingerprint("cpu", 2).key, SHAPE) is None


def _fake_record(arch: str, value: float) -> LatencyRecord:
    return LatencyRecord(
        arch,
        "ref",
        "dev",
        SHAPE,
        value,
        2 * value,
        0.5,
        0.1,
        7,
        1024,
        10,
        20,
        "measured",
        {"threads": 1},
        0.0,
    )


def _writer(path: str, name: str, barrier) -> None:
    cache = LatencyCache(path)
    barrier.wait()  # both writers start together
    for i in range(60):
        cache.put(_fake_record(f"{name}-{i}", float(i + 1)))
        cache.put(_fake_record(f"shared-{i % 30}", float(i + 1)))


@needs_fork
def test_concurrent_writers_do_not_corrupt(tmp_path: Path) -> None:
    path = str(tmp_path / "latency.sqlite")
    LatencyCache(path)
    ctx = multiprocessing.get_context("fork")  # the children only touch sqlite
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, n, barrier)) for n in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = LatencyCache(path)
    records = {r.arch: r for r in cache.records()}
    assert len(cache) == len(records) == 150
    assert records["a-59"] == _fake_record("a-59", 60.0)
    assert records["shared-3"].ratio == 0.5 and records["shared-3"].shape == SHAPE
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- prediction and modes -------------------------------------------------------------------------
def test_prediction_sums_the_table(space: SearchSpace, table: LatencyTable) -> None:
    arch = space.baseline()
    layer, d = arch.layers[0], arch.dim
    e = table.entries
    norm = e[op_key("norm", d, layer.norm)]
    block = e[op_key("mixer", d, layer.mixer)] + e[op_key("channel", d, layer.channel)]
    block += 2 * norm + 2 * e[f"add/{d}"]  # a sequential block: two norms, two residual adds
    ends = e[f"fixed/{d}"] + norm  # stem + head, and the final norm of a pre-norm model
    assert table.predict_ms(arch) == pytest.approx(ends + 2 * block, rel=1e-12)
    looped = arch.replace(loop={"begin": 0, "middle": 2, "end": 0, "repeats": 3})
    assert table.predict_ms(looped) == pytest.approx(ends + 3 * 2 * block, rel=1e-12)
    with pytest.raises(ValueError, match="outside the space"):
        table.predict_ms(arch.replace(dim=32))


def test_modes_give_the_right_source(space: SearchSpace, table: LatencyTable, tmp_path) -> None:
    cache = LatencyCache(tmp_path / "latency.sqlite")
    arch, ref = space.smallest(), space.baseline()
    common = {"cache": cache, "table": table, **RELATIVE}
    predicted, hit = cached_latency(arch, ref, SHAPE, mode="predicted", **common)
    assert (predicted.latency_source, hit, predicted.runs, len(cache)) == ("predicted", False, 0, 0)
    assert predicted.ratio == predicted.ms / predicted.ref_ms
    assert predicted.params == build_model(latency_arch(arch, SHAPE)).num_params()
    first, hit = cached_latency(arch, ref, SHAPE, mode="predicted+verify", **common)
    assert (first.latency_source, hit) == ("predicted", False)
    verified, hit = cached_latency(arch, ref, SHAPE, mode="predicted+verify", verify=True, **common)
    assert (verified.latency_source, hit, len(cache)) == ("measured", False, 1)  # re-measured
    again, hit = cached_latency(arch, ref, SHAPE, mode="measured", **common)
    assert hit and again == verified
    with pytest.raises(ValueError, match="latency table"):
        cached_latency(arch, ref, SHAPE, mode="predicted", cache=cache, threads=1)
    with pytest.raises(ValueError, match="built for device"):  # a table of another device
        cached_latency(arch, ref, SHAPE, mode="predicted", table=table, threads=2)
    with pytest.raises(ValueError, match="mode"):
        cached_latency(arch, ref, SHAPE, mode="guessed", table=table, threads=1)
    estimator = LatencyEstimator(
        ref,
        SHAPE,
        cache=cache,
        mode="predicted+verify",
        table=table,
        threads=1,
        repeats=3,
        min_run_time=0.002,
    )
    assert estimator(space.teacher())[0].latency_source == "predicted"
    assert estimator.verify(arch) == (verified, True)


def test_table_is_cached_as_json(space: SearchSpace, tmp_path: Path) -> None:
    opts = {"threads": 1, "rounds": 1, "block_time": 0.001}
    table, path, built = load_or_build_table(space, SHAPE, directory=tmp_path, **opts)
    assert built and path.parent == tmp_path and path.suffix == ".json"
    again, same_path, built = load_or_build_table(space, SHAPE, directory=tmp_path, **opts)
    assert not built and same_path == path and again == table == LatencyTable.load(path)
    other = load_or_build_table(space, (1, 8), directory=tmp_path, **opts)[1]
    assert other != path
    path.write_text("{not json")
    assert load_or_build_table(space, SHAPE, directory=tmp_path, **opts)[2]  # rebuilt


# -- command line -----------------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_arch_files_are_one_line_errors(capsys, tmp_path: Path) -> None:
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("dim: [1, 2\nlayers: {")
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(yaml.safe_dump({**ARCH.to_dict(), "dim": -1}))
    cases = {
        tmp_path / "missing.yaml": "missing.yaml",
        malformed: "not valid YAML",
        invalid: "Arch.dim",
    }
    for path, message in cases.items():
        code, out, err = _cli(capsys, f"arch_file={path}")
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: arch_file=")
        assert message in err
    code, _, err = _cli(capsys, "build_table=false")
    assert code == 2 and "arch_file=PATH" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cli_cuda_without_gpu_is_a_one_line_error(capsys, tmp_path: Path) -> None:
    code, _, err = _cli(capsys, f"arch_file={ARCH.save(tmp_path / 'a.yaml')}", "device=cuda")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "CUDA is not available" in err


def test_cli_measures_and_builds_a_table(capsys, tmp_path: Path) -> None:
    arch_file = ARCH.save(tmp_path / "a.yaml")
    fast = [
        "threads=1",
        "latency_shape=[1,24]",
        "measure.min_run_time=0.002",
        "measure.warmup=1",
        "measure.block_time=0.001",
    ]
    code, out, _ = _cli(capsys, f"arch_file={arch_file}", *fast)
    assert code == 0 and ARCH.signature in out and "median ms" in out and "max_len" in out
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    code, out, _ = _cli(
        capsys,
        f"+space={space_file}",
        "build_table=true",
        f"arch_file={arch_file}",
        f"cache_dir={tmp_path}",
        "table.rounds=1",
        "table.block_time=0.001",
        *fast,
    )
    assert code == 0 and "mixer softmax heads=2" in out and "D=24" in out
    assert f"predicted arch {ARCH.signature}" in out
    assert len(list(tmp_path.glob("latency-table-tiny-*.json"))) == 1


def test_estimator_for_space_keeps_table_and_cache_together(space: SearchSpace, tmp_path) -> None:
    estimator = LatencyEstimator.for_space(
        space,
        SHAPE,
        directory=tmp_path,
        mode="predicted",
        threads=1,
        table_options={"rounds": 1},
    )
    assert estimator.reference == space.baseline() and estimator.table is not None
    assert estimator.cache.path == tmp_path / "latency.sqlite"
    assert len(list(tmp_path.glob("latency-table-tiny-*.json"))) == 1
    record, hit = estimator(space.smallest())
    assert (record.latency_source, hit) == ("predicted", False)
    assert estimator.verify(space.smallest())[0].latency_source == "predicted"  # not verifying
    measured = LatencyEstimator.for_space(space, SHAPE, directory=tmp_path, threads=1)
    assert measured.table is None and measured.mode == "measured"
