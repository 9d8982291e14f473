"""bench throughput: both paths run on the tiny model and the result carries rates, latencies and ratios."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from imageloop.bench import throughput
from imageloop.bench.throughput import TORCH_DEFAULT_THREADS, PathResult, ThroughputConfig, run_throughput_bench
from imageloop.cli import app
from tests.server.kit import save_tiny_model, tiny_settings


def test_percentiles_use_nearest_rank() -> None:
    run = PathResult("x", 1, 4, 2.0, [4.0, 1.0, 3.0, 2.0])
    assert (run.percentile(50), run.percentile(95), run.images_per_second) == (2.0, 4.0, 2.0)


def test_bench_measures_the_server_and_the_naive_loop(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    config = ThroughputConfig(clients=(2,), requests_per_client=2, naive_requests=2, steps=1, cpu_autocast="off")
    result = run_throughput_bench(tiny_settings(tmp_path / "data", model), config)
    assert result["naive"]["images"] == 2 and result["sampling"]["steps"] == 1
    (server,) = result["server"]
    assert (server["clients"], server["images"]) == (2, 4)
    assert server["latency_p95_s"] >= server["latency_p50_s"] > 0
    # the denoiser's share of the workers' wall time: measured on both paths, and the rest of a request costs some
    assert 0.0 < server["denoiser_share"] < 1.0 and 0.0 < result["naive"]["denoiser_share"] < 1.0
    assert set(result["ratio_vs_naive"]) == set(result["cpu_ratio_vs_naive"]) == {"2"}  # one per client count
    assert result["target_ratios"] == {"8": 3.0, "32": 3.5} and result["targets_met"] == {}  # 2 clients: no target
    # No autocast: the plain loop is already the same-dtype baseline.
    assert result["naive_same_dtype"] is None and result["dtype_gain"] == 1.0
    assert result["ratio_vs_naive_same_dtype"] == result["ratio_vs_naive"]
    # tiny_settings: one torch thread for the server's one worker; the naive loop keeps torch's default.
    assert result["compute"]["server"] == {"dtype": "float32", "autocast": "off", "workers": 1, "torch_threads": 1}
    assert result["compute"]["naive"]["torch_threads"] == TORCH_DEFAULT_THREADS == result["naive"]["torch_threads"]


def test_bench_runs_the_server_with_the_workers_and_threads_asked_for(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    config = ThroughputConfig(clients=(4,), requests_per_client=1, naive_requests=1, steps=1, cpu_autocast="off",
                              workers=2, threads=1)
    before = torch.get_num_threads()
    result = run_throughput_bench(tiny_settings(tmp_path / "data", model), config)
    (server,) = result["server"]
    assert (server["images"], server["workers"], server["torch_threads"]) == (4, 2, 1)
    assert result["config"]["workers"] == 2 and result["config"]["threads"] == 1
    assert result["naive"]["workers"] == 1 and result["naive"]["torch_threads"] == TORCH_DEFAULT_THREADS
    assert torch.get_num_threads() == before  # the engines' process-wide setting is undone


def test_bench_separates_the_dtype_gain_from_the_batching_gain(tmp_path: Path) -> None:
    model = save_tiny_model(tmp_path / "model")
    config = ThroughputConfig(clients=(2,), requests_per_client=1, naive_requests=2, steps=1, cpu_autocast="bf16")
    result = run_throughput_bench(tiny_settings(tmp_path / "data", model), config)
    naive, same, (server,) = result["naive"], result["naive_same_dtype"], result["server"]
    assert (naive["autocast"], same["autocast"], server["autocast"]) == ("off", "bf16", "bf16")
    assert same["path"] == "diffusers loop, same dtype" and same["images"] == 2
    dtypes = {path: {k: result["compute"][path][k] for k in ("dtype", "autocast")} for path in result["compute"]}
    assert dtypes["naive_same_dtype"] == dtypes["server"] == {"dtype": "float32", "autocast": "bf16"}
    assert server["images"] == 2


def test_gains_compare_each_path_with_its_own_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The measurements are faked at the timing boundary, so the gains have known values: plain loop 1 image/s
    # (0.5 per CPU-second), the same loop under autocast 2 (1), the server with 2 clients 4 (1).
    def naive(engine: object, config: object, sampling: object, say: object, *, autocast: object = None) -> PathResult:
        if autocast is None:
            return PathResult("diffusers loop", 1, 2, 2.0, [1.0, 1.0], cpu_seconds=4.0)
        return PathResult("diffusers loop, same dtype", 1, 2, 1.0, [0.5, 0.5], cpu_seconds=2.0, autocast="bf16")

    def server(base_url: str, key: str, clients: int, config: object, params: object, first: int) -> PathResult:
        return PathResult("imageloop server", clients, 2 * clients, 1.0, [0.5] * 2 * clients, cpu_seconds=4.0)

    monkeypatch.setattr(throughput, "run_naive", naive)
    monkeypatch.setattr(throughput, "run_server", server)
    model = save_tiny_model(tmp_path / "model")
    config = ThroughputConfig(clients=(2,), cpu_autocast="bf16")
    result = run_throughput_bench(tiny_settings(tmp_path / "data", model), config)
    assert result["ratio_vs_naive"] == {"2": 4.0} and result["cpu_ratio_vs_naive"] == {"2": 2.0}
    assert result["ratio_vs_naive_same_dtype"] == {"2": 2.0} and result["cpu_ratio_vs_naive_same_dtype"] == {"2": 1.0}
    assert (result["dtype_gain"], result["cpu_dtype_gain"]) == (2.0, 2.0)


def test_targets_are_judged_per_client_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Plain loop 1 image/s; the server 3.2 images/s at 8 clients (>= 3x: met) and 3.2 at 32 (< 3.5x: not met).
    def naive(engine: object, config: object, sampling: object, say: object, *, autocast: object = None) -> PathResult:
        return PathResult("diffusers loop", 1, 2, 2.0, [1.0, 1.0], cpu_seconds=2.0)

    def server(base_url: str, key: str, clients: int, config: object, params: object, first: int) -> PathResult:
        return PathResult("imageloop server", clients, 32, 10.0, [1.0] * 32, cpu_seconds=10.0)

    monkeypatch.setattr(throughput, "run_naive", naive)
    monkeypatch.setattr(throughput, "run_server", server)
    model = save_tiny_model(tmp_path / "model")
    config = ThroughputConfig(clients=(8, 32), cpu_autocast="off")
    result = run_throughput_bench(tiny_settings(tmp_path / "data", model), config)
    assert result["ratio_vs_naive"] == {"8": pytest.approx(3.2), "32": pytest.approx(3.2)}
    assert result["targets_met"] == {"8": True, "32": False}


def test_cli_rejects_a_bad_size(tmp_path: Path) -> None:
    from imageloop.cli import _register

    _register()
    outcome = CliRunner().invoke(app, ["bench", "throughput", "--size", "big", "--out", str(tmp_path / "r.json")])
    assert outcome.exit_code == 2 and "WIDTHxHEIGHT" in outcome.output
