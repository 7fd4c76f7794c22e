"""Two Ray nodes on this machine (``ray.cluster_utils.Cluster`` on 127.0.0.1): a run joins the
cluster by its address, and its learner and generator land on different nodes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from tests.test_distributed import LOOPBACK, config_for


@pytest.mark.slow
def test_a_step_with_the_learner_and_the_generator_on_different_nodes(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.cluster_utils import Cluster

    from spiral_train.trainer import Trainer

    for name, value in LOOPBACK.items():
        monkeypatch.setenv(name, value)
    sessions = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must fit 107 bytes
    # Cluster notes the head's address in /tmp/ray/ray_current_cluster, which a later
    # ray.init() would try to join: this test removes it again
    address_file = Path(ray._private.utils.get_ray_address_file(None))
    address_file.parent.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": str(sessions)})
    try:
        cluster.add_node(num_cpus=1)
        config = config_for(tiny_qwen3, tmp_path / "run", 1, 1, **{"cluster.address": cluster.address, "cluster.cpus_per_worker": 1})
        with Trainer(config) as trainer:
            assert trainer.workers.distributed
            nodes = [
                ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
                for actor in (*trainer.learners.actors, *trainer.generators.actors)
            ]
            assert len(set(nodes)) == 2  # one worker on each node (one CPU each)
            metrics = trainer.step()
            assert metrics["samples"] >= 16 and metrics["weight_sync_bytes"] > 0
    finally:
        cluster.shutdown()
        shutil.rmtree(sessions, ignore_errors=True)
        address_file.unlink(missing_ok=True)
