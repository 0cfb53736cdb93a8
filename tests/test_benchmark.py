"""python -m resnext.benchmark on CPU with tiny settings: the JSON's shape, the markdown table, refusals."""
from __future__ import annotations

import json
import sys

import pytest

from resnext import benchmark
from resnext.config.errors import ConfigError
from tests.conftest import compose_config, refusal_line

# Seconds per measurement are a fraction of a second: the figures mean nothing, the shape is what counts.
QUICK = ["dataset.image_size=16", "dataset.batch_size=4", "dataset.workers=0", "dataset.dali_threads=1",
         "benchmark.seconds=0.2", "benchmark.warmup_steps=1", "benchmark.e2e_steps=2", "benchmark.jpeg_images=8",
         "benchmark.jpeg_classes=2", "model=resnet50"]


@pytest.mark.slow
def test_the_report_has_the_documented_shape_and_every_measure(tmp_path, monkeypatch):
    made = []
    real_tree = benchmark.make_jpeg_tree
    monkeypatch.setattr(benchmark, "make_jpeg_tree", lambda root, *a, **k: made.append(root) or real_tree(
        root, *a, sizes=((64, 48), (48, 64)), **k))  # ImageNet-like sizes cost seconds here; the code path is the same
    report = benchmark.run_benchmark(compose_config(QUICK), tmp_path)

    assert json.loads((tmp_path / "benchmark.json").read_text()) == report
    assert set(report) == {"env", "config", "results", "ratios"}
    env, config = report["env"], report["config"]
    assert env["device"] == "cpu" and env["torch"] and isinstance(env["cpu_cores"], int)
    assert {k: config[k] for k in ("model", "amp", "batch_size", "image_size", "channels_last", "compile")} == {
        "model": "resnet50", "amp": "off", "batch_size": 4, "image_size": 16, "channels_last": False,
        "compile": False}
    expected = [m for m in benchmark.MEASURES if m != "loader_dali" or env["dali"]]
    assert list(report["results"]) == expected
    for name, result in report["results"].items():
        assert result["img_per_s"] > 0, name
        assert result["step_ms_median"] is None or result["step_ms_median"] > 0
    assert report["ratios"]["baseline_step"] == 1.0
    assert report["ratios"]["step"] == pytest.approx(report["results"]["step"]["img_per_s"]
                                                     / report["results"]["baseline_step"]["img_per_s"])
    assert "temporary JPEG folder" in config["data"]
    assert made and not made[0].exists()  # the temporary folder is gone
    table = (tmp_path / "benchmark.md").read_text()
    assert "| measure | img/s | median step ms | x baseline_step |" in table
    assert all(f"| {name} |" in table for name in expected)
    assert not list(tmp_path.rglob("*.pth.tar"))  # e2e's checkpoints are not left behind


def test_only_the_named_measures_run(tmp_path):
    report = benchmark.run_benchmark(compose_config([*QUICK, "benchmark.only=[baseline_step]"]), tmp_path)
    assert list(report["results"]) == ["baseline_step"] and "none needed" in report["config"]["data"]


@pytest.mark.parametrize("overrides, message", [
    (["benchmark.only=[fastest]"], "benchmark.only=.*fastest not among baseline_step"),
    (["device=cpu", "device.nprocs=2", "distributed=spawn"], "the benchmark measures one device"),
])
def test_a_benchmark_that_cannot_run_is_refused_naming_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        benchmark.run_benchmark(compose_config([*QUICK, *overrides]), tmp_path)


def test_asking_for_loader_dali_without_dali_gives_the_pip_line(tmp_path, monkeypatch):
    for name in ("nvidia.dali", "nvidia.dali.plugin.pytorch"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r'pip install "resnext\[dali\]"'):
        benchmark.run_benchmark(compose_config([*QUICK, "benchmark.only=[loader_dali]"]), tmp_path)


def test_e2e_runs_as_many_steps_as_fill_the_seconds_at_e2e_plains_pace_within_the_cap():
    cfg = compose_config([*QUICK, "benchmark.seconds=2", "benchmark.warmup_steps=3", "benchmark.e2e_steps=30"])
    assert benchmark.e2e_steps(cfg, benchmark.Result(10.0, step_ms_median=250.0)) == 3 + 8
    assert benchmark.e2e_steps(cfg, benchmark.Result(10.0, step_ms_median=10.0)) == 30  # the cap
    assert benchmark.e2e_steps(cfg, benchmark.Result(10.0, step_ms_median=60_000.0)) == 4  # one timed step at least
    assert benchmark.e2e_steps(cfg, None) == 30  # no e2e_plain figure: the cap alone


@pytest.mark.slow
def test_e2e_plain_stops_after_the_seconds_not_after_e2e_steps(tmp_path):
    cfg = compose_config([*QUICK, "benchmark.only=[e2e_plain]", "benchmark.e2e_steps=100000", "benchmark.seconds=1"])
    report = benchmark.run_benchmark(cfg, tmp_path)
    result = report["results"]["e2e_plain"]
    timed_steps = 1 / (result["step_ms_median"] / 1000)
    assert timed_steps < 1000  # far below the 99,999-step cap: the clock, not the cap, ended it
    assert result["img_per_s"] > 0


@pytest.mark.parametrize("args, line", [
    (["benchmark.secnds=5"], "benchmark.secnds: Key 'secnds' not in 'BenchmarkConfig': did you mean "
                             "`benchmark.seconds`?"),
    (["+benchmark.secnds=5"], "+benchmark.secnds=5: Key 'secnds' not in 'BenchmarkConfig'; a + override adds a key "
                              "that nothing reads: did you mean `benchmark.seconds`?"),
])
def test_command_line_mistakes_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, line):
    assert refusal_line(monkeypatch, capsys, tmp_path, args, command="benchmark").endswith(line)
