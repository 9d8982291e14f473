"""Training is wired once at start-up: one registry, run store and cycle lock, shared by the routes, the workers
and the training worker, which the app starts and stops with its services."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from imageloop.jobs import EmbeddedJobQueue
from imageloop.server import create_app
from imageloop.server.deps import get_cycle_lock, get_registry, get_runs, get_trainer
from imageloop.server.services import Services
from imageloop.training.serving import ExpanderRouting
from tests.server.kit import save_tiny_model, tiny_settings, wait_until


def test_routes_and_the_training_worker_share_the_services_built_at_start(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data", save_tiny_model(tmp_path / "tiny"),
                             training={"schedule_enabled": False})
    app = create_app(settings)
    with TestClient(app) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        trainer = services.trainer
        registry = services.training.registry
        wait_until(trainer.is_alive)  # it starts once the models have loaded in the background
        assert trainer.stores is services.training
        assert trainer.cycle.registry is services.training.registry
        assert trainer.cycle.runs is services.training.runs and trainer.cycle.lock is services.training.cycle_lock
        assert get_registry(services) is services.training.registry
        assert get_runs(services) is services.training.runs
        assert get_cycle_lock(services) is services.training.cycle_lock
        assert get_trainer(services) is trainer
        # The serving side reads the same registry: the expander's adapters and the workers' generator LoRAs.
        assert isinstance(services.prompts.adapters, ExpanderRouting)
        assert services.prompts.adapters.registry is services.training.registry
        assert isinstance(services.queue, EmbeddedJobQueue)
        wait_until(lambda: services.queue.ready)
        routings = {id(worker.runner.generator_loras) for worker in services.queue.workers}
        assert len(routings) == 1 and services.queue.workers[0].runner.generator_loras.registry is registry
        assert not hasattr(app.state, "trainer")  # nothing fishes it out of app.state
    assert not trainer.is_alive()  # stopped with the services
