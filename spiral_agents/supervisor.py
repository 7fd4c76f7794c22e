"""Timed games in worker processes that the arena can stop.

Games under a move time limit are played in worker processes, each a fresh Python interpreter
(it loads nothing of the caller's ``__main__``) that plays whole games, so agents keep their
state from move to move. A worker tells the arena when each agent call starts and every move
it makes. When a call runs past the limit the arena kills the worker, which stops an agent
that sleeps and one that spins alike; the game is recorded as forfeited by that agent with the
moves before, and the rest of the job goes on in a fresh worker. A worker whose arena process
is gone exits by itself, so none outlives the arena. A worker imports the user's modules
(:func:`spiral_agents.registry.import_user_modules`) before it plays, so their games exist there.
An agent's ``game_over`` hook runs after its game's record has reached the arena, under the
same time limit, and the arena waits for it; one that overruns ends its worker, not the game
already decided.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from spiral_agents.play import GamePlan, Watch, play_plan, timeout_reason
from spiral_agents.records import GameRecord
from spiral_agents.registry import import_user_modules, user_modules

_WORKER = (
    "import sys; from spiral_agents.supervisor import worker_main; "
    "worker_main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])"
)


class WorkerError(RuntimeError):
    """A worker process failed outside any agent call (a bug in a game, not an agent's fault)."""


class _Worker:
    """The arena's end of one worker process and the job it is playing."""

    def __init__(self) -> None:
        jobs_read, jobs_write = os.pipe()
        events_read, events_write = os.pipe()
        path = os.pathsep.join(os.path.abspath(p) for p in sys.path if isinstance(p, str))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(jobs_read), str(events_write), *user_modules()],
                pass_fds=(jobs_read, events_write),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        finally:
            os.close(jobs_read)
            os.close(events_write)
        self.jobs = Connection(jobs_write, readable=False)
        self.events = Connection(events_read, writable=False)
        self.plans: list[GamePlan] = []
        self.position = 0
        self.moves: list[dict[str, Any]] = []
        self.calling: str | None = None
        self.deadline: float | None = None
        self.game_start: float | None = None
        self.ending = False
        """The agent being called is in its ``game_over`` hook: its game is already recorded."""

    @property
    def busy(self) -> bool:
        """Games of its job are left, or an agent's ``game_over`` hook is still running."""
        return self.position < len(self.plans) or self.ending

    def assign(self, plans: list[GamePlan], move_timeout: float | None) -> None:
        self.plans, self.position = plans, 0
        try:
            self.jobs.send(("job", plans, move_timeout))
        except OSError:  # the process has ended: its events pipe reports that next
            pass

    def handle(self, message: tuple, move_timeout: float | None, on_record: Callable) -> None:
        kind = message[0]
        if kind in ("call", "ending"):
            seat, started, timed = message[1:]
            self.calling, self.ending = seat, kind == "ending"
            self.deadline = started + move_timeout if timed and move_timeout is not None else None
            if not self.ending:
                self.game_start = self.game_start or started
        elif kind == "move":
            self.moves.append(message[1])
            self.calling = self.deadline = None
        elif kind == "ended":
            self.calling = self.deadline = None
            self.ending = False
        elif kind == "record":
            on_record(message[1])
            self.next_game()
            self.ending = message[2]  # busy until the agents' game_over hooks have returned
        elif kind == "crash":
            plan = self.plans[self.position]
            raise WorkerError(
                f"an arena worker failed in {plan.game} (seed {plan.seed}): {message[1]}"
            )

    def next_game(self) -> None:
        self.position += 1
        self.moves, self.calling, self.deadline, self.game_start = [], None, None, None
        self.ending = False

    def forfeit(self, reason: Callable[[str], str]) -> GameRecord:
        """The current game, forfeited by the agent being called (``reason(seat)`` says
        why); the worker moves on to the next game."""
        plan, seat = self.plans[self.position], self.calling
        assert seat is not None, "only an agent being called forfeits"
        seconds = time.monotonic() - self.game_start if self.game_start else 0.0
        record = plan.forfeited(self.moves, seat, reason(seat), seconds)
        self.next_game()
        return record

    def rest(self) -> list[GamePlan]:
        return self.plans[self.position :]

    def stop(self) -> int:
        """End the process (killed if still running) and return its exit status."""
        if self.process.poll() is None:
            self.process.kill()
        status = self.process.wait()
        self.jobs.close()
        self.events.close()
        return status


def run_jobs(
    jobs: Sequence[list[GamePlan]],
    *,
    workers: int,
    move_timeout: float | None,
    on_record: Callable[[GameRecord], None],
) -> None:
    """Play every job's games in up to ``workers`` worker processes; ``on_record`` gets each
    record as its game ends (a killed worker's game as a forfeit, at once)."""
    pending = deque(job for job in jobs if job)
    running: dict[Connection, _Worker] = {}
    try:
        while pending or any(worker.busy for worker in running.values()):
            for worker in [w for w in running.values() if not w.busy]:
                if pending:
                    worker.assign(pending.popleft(), move_timeout)
            while pending and len(running) < workers:
                worker = _Worker()
                running[worker.events] = worker
                worker.assign(pending.popleft(), move_timeout)
            deadlines = [w.deadline for w in running.values() if w.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for events in wait(list(running), timeout):
                _check(running, running[events], pending, move_timeout, on_record)
            for worker in list(running.values()):
                if worker.deadline is not None and time.monotonic() >= worker.deadline:
                    _check(running, worker, pending, move_timeout, on_record)
    finally:
        for worker in running.values():
            worker.jobs.close()  # an idle worker exits when its job pipe closes
        for worker in running.values():
            worker.stop()


def _check(
    running: dict[Connection, _Worker],
    worker: _Worker,
    pending: deque,
    move_timeout: float | None,
    on_record: Callable,
) -> None:
    """Take the worker's messages, then end it if its process ended or its agent's call is
    past the time limit, forfeiting that game and queueing the rest of its job."""
    try:
        while worker.events.poll():
            worker.handle(worker.events.recv(), move_timeout, on_record)
    except (EOFError, OSError):
        ended = True
    else:
        ended = False
        if worker.deadline is None or time.monotonic() < worker.deadline:
            return
    del running[worker.events]
    status = worker.stop()
    if not worker.busy:
        return
    if worker.ending:
        worker.ending = False  # a game_over hook overran or ended the process: its game stands
    elif not ended:
        limit = float(move_timeout or 0)  # a deadline means a time limit
        on_record(worker.forfeit(lambda seat: timeout_reason(seat, limit)))
    elif worker.calling is not None:
        on_record(
            worker.forfeit(
                lambda seat: f"{seat}'s agent ended its worker process (exit status {status})"
            )
        )
    else:
        plan = worker.plans[worker.position]
        raise WorkerError(
            f"an arena worker exited (status {status}) outside any agent call, "
            f"in {plan.game} (seed {plan.seed}); see its error output above"
        )
    if worker.rest():
        pending.appendleft(worker.rest())


# --- the worker process -----------------------------------------------------------------


class _Reporter(Watch):
    def __init__(self, events: Connection, move_timeout: float | None) -> None:
        self.events = events
        self.move_timeout = move_timeout

    def calling(self, seat: str, timed: bool) -> None:
        self.events.send(("call", seat, time.monotonic(), timed))

    def moved(self, move: dict[str, Any]) -> None:
        self.events.send(("move", move))

    def finished(self, record: GameRecord, hooks_follow: bool) -> None:
        self.events.send(("record", record, hooks_follow))

    def ending(self, seat: str) -> None:
        self.events.send(("ending", seat, time.monotonic(), True))

    def ended(self) -> None:
        self.events.send(("ended",))


def _read_jobs(jobs: Connection, inbox: queue.SimpleQueue) -> None:
    """Pass jobs on; exit the process as soon as the arena's end of the pipe closes."""
    while True:
        try:
            inbox.put(jobs.recv())
        except (EOFError, OSError):
            os._exit(0)
        except Exception:  # noqa: BLE001 - a job that does not unpickle here
            inbox.put(("unreadable", traceback.format_exc(limit=-1).strip().splitlines()[-1]))


def worker_main(jobs_fd: int, events_fd: int, modules: Sequence[str] = ()) -> None:
    """Entry point of a worker process: import the user's ``modules``, then play the jobs that
    arrive and report every call, move and record."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the arena's to handle
    for fd in (jobs_fd, events_fd):
        os.set_inheritable(fd, False)
    import_user_modules(modules)
    jobs, events = Connection(jobs_fd, writable=False), Connection(events_fd, readable=False)
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=_read_jobs, args=(jobs, inbox), daemon=True).start()
    while True:
        message = inbox.get()
        if message[0] == "unreadable":
            events.send(("crash", f"the job could not be loaded: {message[1]}"))
            continue
        _, plans, move_timeout = message
        reporter = _Reporter(events, move_timeout)
        try:
            for plan in plans:
                play_plan(plan, reporter)
        except Exception:  # noqa: BLE001 - reported to the arena, which stops
            traceback.print_exc()
            events.send(("crash", traceback.format_exc(limit=-1).strip().splitlines()[-1]))
