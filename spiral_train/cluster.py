"""Where the workers run: in the controller's process (one learner, one generator, no cluster
address: Ray is never imported) or as Ray actors in a placement group, on a local Ray started
for the run or on an existing cluster (``cluster.address``).

Placement: disaggregated, every learner rank and every generator has its own bundle
(``gpus_per_learner`` / ``gpus_per_generator`` GPUs); colocated, bundle ``i`` holds learner rank
``i`` and generator ``i`` (their GPUs shared: the generator sleeps while the learners train).
A local Ray keeps its logs under ``<output_dir>/ray`` (or a short temporary folder that
``<output_dir>/ray`` links to, where the run's path is too long for Ray's sockets).

Both kinds of group answer :meth:`call` (every worker, the same arguments: learner ranks) and
:meth:`call_each` (one argument list per worker: generators, whose failures come back as
values so that a dead generator voids only its own games).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spiral_train.config import ConfigError, TrainConfig
from spiral_train.workers import GeneratorWorker, LearnerWorker

PASSED_ENV = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE", "VLLM_CPU_KVCACHE_SPACE", "VLLM_SERVER_DEV_MODE")
"""Environment variables a worker gets from the controller when they are set there."""

REVIVE_SECONDS = 600.0
"""How long a restarted generator may take to come back before the run stops."""

WEIGHTS_GROUP = "weights"
"""The concurrency group of a generator actor in asynchronous training (``max_staleness`` >= 1)
that takes weights while the default group plays (:meth:`GeneratorWorker.offer_weights`)."""


class WorkerFailure(RuntimeError):
    """A worker died or its call failed in a way that ends the step."""


class InProcess:
    """Workers in the controller's process, called directly."""

    def __init__(self, workers: Sequence[Any]) -> None:
        self.workers = list(workers)

    def __len__(self) -> int:
        return len(self.workers)

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(worker, method)(*args) for worker in self.workers]

    def call_each(self, method: str, arguments: Sequence[tuple[Any, ...] | None]) -> list[Any]:
        return [None if args is None else getattr(w, method)(*args) for w, args in zip(self.workers, arguments)]

    def call_one(self, index: int, method: str, *args: Any) -> Any:
        return getattr(self.workers[index], method)(*args)

    def first_result(self, method: str, *args: Any) -> Any:
        """Call every worker (a collective), keep worker 0's result."""
        return self.call(method, *args)[0]

    first_ref = first_result

    def revive(self, index: int) -> None:
        """In-process workers are never restarted."""

    def close(self) -> None:
        self.workers.clear()


class RayWorkers:
    """Ray actors of one role (``learner`` or ``generator``)."""

    def __init__(self, actors: list[Any], role: str) -> None:
        self.actors = actors
        self.role = role

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args: Any) -> list[Any]:
        """Every worker's result; the first failure raises :class:`WorkerFailure` (the other
        calls are not waited for: a dead rank leaves the others stuck in a collective)."""
        import ray

        refs = [getattr(actor, method).remote(*args) for actor in self.actors]
        self._wait_all(refs, method)
        return ray.get(refs)

    def _wait_all(self, refs: list[Any], method: str) -> None:
        import ray

        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except Exception as error:  # noqa: BLE001 - translated below
                raise self._failure(refs.index(done[0]), method, error) from None

    def call_each(
        self,
        method: str,
        arguments: Sequence[tuple[Any, ...] | None],
        raise_errors: bool = False,
        concurrency_group: str | None = None,
    ) -> list[Any]:
        """One call per worker with its own arguments (None: not called, None back); a failed
        call's exception is returned in its place (raised with ``raise_errors``)."""
        return self.results(self.submit_each(method, arguments, concurrency_group), method, raise_errors)

    def submit_each(
        self, method: str, arguments: Sequence[tuple[Any, ...] | None], concurrency_group: str | None = None
    ) -> list[Any]:
        """:meth:`call_each`'s calls, not waited for: their object references (None where not
        called); ``concurrency_group`` names the actor's group that runs them (default: the
        actor's one-at-a-time queue)."""
        refs = []
        for actor, args in zip(self.actors, arguments):
            call = getattr(actor, method)
            if concurrency_group is not None:
                call = call.options(concurrency_group=concurrency_group)
            refs.append(None if args is None else call.remote(*args))
        return refs

    def results(self, refs: Sequence[Any], method: str, raise_errors: bool = False) -> list[Any]:
        """The results of :meth:`submit_each`'s calls, waited for in order, as :meth:`call_each`
        returns them."""
        import ray

        results: list[Any] = []
        for index, ref in enumerate(refs):
            try:
                results.append(None if ref is None else ray.get(ref))
            except Exception as error:  # noqa: BLE001 - the caller decides what a failure costs
                failure = self._failure(index, method, error)
                if raise_errors:
                    raise failure from None
                results.append(failure)
        return results

    def call_one(self, index: int, method: str, *args: Any) -> Any:
        return self.call_each(method, [args if i == index else None for i in range(len(self))], raise_errors=True)[index]

    def first_result(self, method: str, *args: Any) -> Any:
        """Call every worker (a collective), keep worker 0's result."""
        return self.call(method, *args)[0]

    def first_ref(self, method: str, *args: Any) -> Any:
        """Call every worker (a collective) and return worker 0's result as an object
        reference, not fetched here: passed to other workers' calls, each gets it from the
        object store (one put, many gets)."""
        import ray

        refs = [getattr(actor, method).remote(*args) for actor in self.actors]
        self._wait_all(refs, method)
        ray.wait(refs[:1])
        return refs[0]

    def revive(self, index: int) -> None:
        """Wait until Ray has restarted worker ``index`` (its constructor has run again)."""
        import ray

        deadline = time.monotonic() + REVIVE_SECONDS
        while True:
            try:
                ray.get(self.actors[index].ping.remote(), timeout=60)
                return
            except ray.exceptions.ActorDiedError as error:
                raise WorkerFailure(f"{self.role} {index} died and Ray will not restart it again: {error}") from None
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                if time.monotonic() > deadline:
                    raise WorkerFailure(f"{self.role} {index} did not come back within {REVIVE_SECONDS:.0f} s") from None
                time.sleep(0.5)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def _failure(self, index: int, method: str, error: Exception) -> Exception:
        """The worker's own exception where it raised one, else a :class:`WorkerFailure`."""
        import ray

        if isinstance(error, ray.exceptions.RayTaskError) and not isinstance(error, ray.exceptions.RayActorError):
            cause = error.cause
            if isinstance(cause, Exception):
                return cause
        return WorkerFailure(f"{self.role} {index} failed during {method}: {type(error).__name__}: {_first_line(error)}")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


class Workers:
    """The run's learner ranks and generators, and the Ray session they live in (if any)."""

    def __init__(
        self,
        learners: InProcess | RayWorkers,
        generators: InProcess | RayWorkers,
        ray_started: bool = False,
        placement_group: Any = None,
    ) -> None:
        self.learners = learners
        self.generators = generators
        self.ray_started = ray_started
        self.placement_group = placement_group

    @property
    def distributed(self) -> bool:
        return isinstance(self.learners, RayWorkers)

    def close(self) -> None:
        """Stop the workers (and the Ray session this run started)."""
        self.generators.close()
        self.learners.close()
        if self.placement_group is not None:
            from ray.util import remove_placement_group

            remove_placement_group(self.placement_group)
            self.placement_group = None
        if self.ray_started:
            import ray

            ray.shutdown()
            self.ray_started = False


def start_workers(config: TrainConfig) -> Workers:
    """The workers ``config.cluster`` asks for, constructed and ready."""
    if not config.cluster.uses_ray:
        learner = LearnerWorker(config)
        generator = GeneratorWorker(config, module=learner.model, tokenizer=learner.tokenizer)
        return Workers(InProcess([learner]), InProcess([generator]))
    return _start_on_ray(worker_config(config))


def worker_config(config: TrainConfig) -> TrainConfig:
    """``config`` with local paths made absolute (a worker's working folder may differ)."""
    model = config.model
    path = Path(model.path).expanduser()
    if path.exists() or config.build_tiny_model:
        model = model.model_copy(update={"path": str(path.resolve())})
    return config.model_copy(update={"model": model, "output_dir": str(Path(config.output_dir).resolve())})


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("cluster: several workers or a cluster address need Ray: pip install 'spiral-selfplay[distributed]'") from None
    return ray


def preflight(config: TrainConfig) -> None:
    """The cluster settings' ConfigErrors before anything starts: Ray missing, an address that
    does not answer, more GPUs than this machine has (a joined cluster's resources are checked
    once connected, before any worker starts)."""
    if not config.cluster.uses_ray:
        return
    _ray()
    if config.cluster.address in (None, "local"):
        check_local_gpus(config)
    else:
        check_address(config.cluster.address)


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """ConfigError unless ``address`` (``host:port``) accepts a connection (``auto`` and None
    are not checked here)."""
    if address in (None, "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"cluster.address: expected host:port of a Ray head (or auto), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(f"cluster.address: cannot reach a Ray head at {address} ({error.strerror or error})") from None


def needed_resources(config: TrainConfig) -> dict[str, float]:
    """CPUs and GPUs the placement group reserves."""
    c = config.cluster
    if c.colocate:
        return {"CPU": 2 * c.cpus_per_worker * c.learners, "GPU": c.gpus_per_learner * c.learners}
    return {
        "CPU": c.cpus_per_worker * (c.learners + c.generators),
        "GPU": c.gpus_per_learner * c.learners + c.gpus_per_generator * c.generators,
    }


def check_local_gpus(config: TrainConfig) -> None:
    """ConfigError when a local run asks for more GPUs than this machine has."""
    import torch

    wanted = needed_resources(config)["GPU"]
    have = torch.cuda.device_count()
    if wanted > have:
        raise ConfigError(
            f"cluster: needs {wanted:g} GPUs (learners x gpus_per_learner + generators x "
            f"gpus_per_generator), this machine has {have}; on the CPU set "
            "cluster.gpus_per_learner=0 cluster.gpus_per_generator=0"
        )


def ray_log_dir(output_dir: Path) -> Path:
    """Where a local Ray keeps its session (logs included): under the run folder, or a short
    temporary folder that ``<run>/ray`` links to when the run's path is too long for the
    unix sockets Ray makes there (107 bytes)."""
    folder = output_dir / "ray"
    if len(str(folder)) <= 50:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    short = Path(tempfile.mkdtemp(prefix="spiral-ray-"))
    if folder.is_symlink() or not folder.exists():
        folder.unlink(missing_ok=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(short, target_is_directory=True)
    return short


def _start_on_ray(config: TrainConfig) -> Workers:
    ray = _ray()
    c = config.cluster
    started = False
    if not ray.is_initialized():
        if c.address not in (None, "local"):
            check_address(c.address)
            ray.init(address=c.address, log_to_driver=False)
        else:
            check_local_gpus(config)
            cpus = max(os.cpu_count() or 1, int(needed_resources(config)["CPU"] + 0.999))
            ray.init(num_cpus=cpus, _temp_dir=str(ray_log_dir(Path(config.output_dir))), log_to_driver=False, include_dashboard=False)
        started = True
    try:
        return _place(ray, config, started)
    except BaseException:
        if started:
            ray.shutdown()
        raise


def _place(ray: Any, config: TrainConfig, started: bool) -> Workers:
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    c = config.cluster
    wanted = needed_resources(config)
    have = ray.cluster_resources()
    for kind, amount in wanted.items():
        if amount > have.get(kind, 0.0) + 1e-9:
            raise ConfigError(f"cluster: needs {amount:g} {kind}s, the Ray cluster has {have.get(kind, 0.0):g}")
    if c.colocate:
        bundles = [{"CPU": 2 * c.cpus_per_worker, "GPU": c.gpus_per_learner} for _ in range(c.learners)]
        learner_bundles = generator_bundles = list(range(c.learners))
        learner_gpus = generator_gpus = c.gpus_per_learner / 2  # one GPU (or more) shared
    else:
        bundles = [{"CPU": c.cpus_per_worker, "GPU": c.gpus_per_learner} for _ in range(c.learners)]
        bundles += [{"CPU": c.cpus_per_worker, "GPU": c.gpus_per_generator} for _ in range(c.generators)]
        learner_bundles = list(range(c.learners))
        generator_bundles = list(range(c.learners, c.learners + c.generators))
        learner_gpus, generator_gpus = c.gpus_per_learner, c.gpus_per_generator
    bundles = [{k: v for k, v in b.items() if v} for b in bundles]
    group = placement_group(bundles, strategy="PACK")
    try:
        ray.get(group.ready(), timeout=120)
    except ray.exceptions.GetTimeoutError:
        ray.util.remove_placement_group(group)
        raise ConfigError(f"cluster: Ray could not place {len(bundles)} bundles {bundles} within 120 s") from None
    env = {"env_vars": _worker_env()}

    def at(bundle: int, cpus: float, gpus: float) -> dict[str, Any]:
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle)
        return {"num_cpus": cpus, "num_gpus": gpus, "scheduling_strategy": strategy, "runtime_env": env}

    cpus = c.cpus_per_worker
    master = ray.get(ray.remote(_free_address).options(**at(learner_bundles[0], 0, 0)).remote())
    learner_actor = ray.remote(LearnerWorker)
    learners = [
        learner_actor.options(max_restarts=0, **at(bundle, cpus, learner_gpus)).remote(config, rank, c.learners, master if c.learners > 1 else None)
        for rank, bundle in enumerate(learner_bundles)
    ]
    # Asynchronous training: a second thread takes weights while the first plays.
    groups = {"concurrency_groups": {WEIGHTS_GROUP: 1}} if config.max_staleness else {}
    generator_actor = ray.remote(**groups)(GeneratorWorker) if groups else ray.remote(GeneratorWorker)
    generators = [
        generator_actor.options(max_restarts=c.generator_restarts, max_task_retries=0, **at(bundle, cpus, generator_gpus)).remote(config)
        for bundle in generator_bundles
    ]
    workers = Workers(RayWorkers(learners, "learner rank"), RayWorkers(generators, "generator"), started, group)
    workers.learners.call("ping")
    workers.generators.call("ping")
    return workers


def _worker_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)  # the run's `imports` resolve as in the controller
    return env


def _free_address() -> str:
    """``host:port`` of a free port on this node (runs where learner rank 0 will)."""
    import ray

    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return f"{ray.util.get_node_ip_address()}:{port}"
