"""Worker processes that run one function per item under a wall-clock limit; a worker past it is killed and replaced.

Why processes, and why our own pool: math-verify bounds its own work with ``signal.alarm``, which works only on a
main thread, and cannot interrupt C code at all (``123456789^{987654321}`` spends minutes inside one big-integer
power). A thread cannot be killed; a process can. ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` have no
per-item timeout and break (or hang) when a worker is killed, so this module keeps one pipe per worker instead.

Workers are fresh interpreters (``python -c``, not a fork: no copy of the trainer's threads, locks or model memory,
and unlike multiprocessing's ``spawn`` they never re-run the user's ``__main__`` script). They start when the pool
is first used, run an optional ``initializer`` (imports, warm-up) before they report ready, and are reused across
calls. A worker's clock starts when it is handed an item, so start-up time never counts against an item.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

logger = logging.getLogger(__name__)

_LIVE: set[subprocess.Popen] = set()
"""Every worker process not yet stopped, killed at interpreter exit if its pool was never closed."""


@atexit.register
def _kill_live_workers() -> None:
    for process in list(_LIVE):
        process.kill()


_READY = "ready"


class TimedOut(str):
    """The ``why`` of an item stopped at the timeout (a str, so it reads like any other reason)."""


_START_TIMEOUT_S = 120.0
"""A worker that is not ready this long after it was started is a broken setup, not a slow answer."""


def import_path(fn: Callable) -> str:
    """``"package.module:function"`` for a module-level function (workers import it by this name)."""
    path = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in fn.__qualname__ or fn.__module__ == "__main__":
        raise ValueError(f"{path} cannot run in a worker process: use a function defined at the top of a module")
    return path


def resolve(path: str) -> Callable:
    """The object named by ``"package.module:attr.sub"``."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _serve() -> None:
    """Body of one worker process (``python -c``): initialise, say ready, then answer items until ``None``.

    The protocol runs over the original stdin / stdout; stdout is then pointed at stderr, so a stray ``print`` in
    the verifier cannot corrupt it.
    """
    requests = Connection(os.dup(0), writable=False)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    fn_path, init_path = requests.recv()
    try:
        fn = resolve(fn_path)
        if init_path:
            resolve(init_path)()
    except BaseException:  # noqa: BLE001 (reported to the parent, which raises it)
        replies.send(("init_error", traceback.format_exc()))
        return
    replies.send(_READY)
    while True:
        try:
            message = requests.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        index, item = message
        try:
            replies.send((index, True, fn(item)))
        except Exception:  # noqa: BLE001 (a failing item scores as failed, the worker lives on)
            replies.send((index, False, traceback.format_exc(limit=3)))


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    """Replies from the worker (readable end)."""
    requests: Connection
    """Items to the worker (writable end)."""
    started: float
    ready: bool = False
    job: int | None = None
    """Index of the item the worker is running, or None when idle."""
    deadline: float = 0.0


@dataclass
class PoolStats:
    """Counters since the pool started: items run, items past the timeout, items that raised, workers restarted."""

    items: int = 0
    timeouts: int = 0
    errors: int = 0
    restarts: int = 0
    last_errors: list[str] = field(default_factory=list)


class TimeoutPool:
    """``workers`` processes applying ``fn`` to items, each item limited to ``timeout`` seconds of wall clock.

    ``fn`` and ``initializer`` must be module-level functions: workers import them by name. Use as a context
    manager, or call :meth:`close`; workers still alive when the interpreter exits are killed then.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        workers: int,
        timeout: float,
        initializer: Callable[[], None] | None = None,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.fn, self.initializer = fn, initializer
        self.num_workers, self.timeout = workers, timeout
        self.stats = PoolStats()
        self._workers: list[_Worker] = []
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def _start_worker(self) -> _Worker:
        fn_path = import_path(self.fn)
        init_path = import_path(self.initializer) if self.initializer else None
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # what the parent imports
        process = subprocess.Popen(
            [sys.executable, "-c", "from neggrad.tasks.verifiers.pool import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        _LIVE.add(process)
        requests = Connection(os.dup(process.stdin.fileno()), readable=False)
        replies = Connection(os.dup(process.stdout.fileno()), writable=False)
        process.stdin.close()
        process.stdout.close()
        requests.send((fn_path, init_path))
        return _Worker(process, replies, requests, time.monotonic())

    def _stop(self, worker: _Worker, *, kill: bool) -> None:
        if not kill:
            try:
                worker.requests.send(None)
                worker.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if worker.process.poll() is None:
            worker.process.kill()  # it may be stuck in C code, where no signal handler runs
            worker.process.wait(timeout=5)
        _LIVE.discard(worker.process)
        worker.conn.close()
        worker.requests.close()

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker`` and start a fresh one in its place."""
        self._stop(worker, kill=True)
        self._workers[self._workers.index(worker)] = self._start_worker()
        self.stats.restarts += 1

    def close(self) -> None:
        """Ask idle workers to exit, kill busy ones, and wait for all of them. Safe to call twice."""
        self._closed = True
        for worker in self._workers:
            self._stop(worker, kill=worker.job is not None)
        self._workers = []

    def __enter__(self) -> TimeoutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pids(self) -> list[int | None]:
        """Process ids of the current workers (empty before the first :meth:`map`)."""
        return [w.process.pid for w in self._workers]

    # ------------------------------------------------------------------ work
    def start(self) -> None:
        """Start the workers (if not yet) and wait until every one is ready; :meth:`map` also starts them lazily."""
        if self._closed:
            raise RuntimeError("this TimeoutPool is closed; build a new one")
        if not self._workers:
            self._workers = [self._start_worker() for _ in range(self.num_workers)]
        while not all(w.ready for w in self._workers):
            starting = [w for w in self._workers if not w.ready]
            if time.monotonic() - min(w.started for w in starting) > _START_TIMEOUT_S:
                self.close()
                raise RuntimeError(f"a reward worker did not start within {_START_TIMEOUT_S:g} s")
            for worker in [w for w in starting if w.conn in wait([w.conn for w in starting], timeout=1.0)]:
                self._receive(worker, [])

    def map(self, items: Sequence[Any]) -> list[tuple[bool, Any]]:
        """``(ok, value)`` for each item, in order: ``(True, fn(item))``, or ``(False, why)`` on timeout or error
        (``why`` is a :class:`TimedOut` for a timeout)."""
        if self._closed:
            raise RuntimeError("this TimeoutPool is closed; build a new one")
        if not items:
            return []
        if not self._workers:
            self._workers = [self._start_worker() for _ in range(self.num_workers)]
        results: list[tuple[bool, Any] | None] = [None] * len(items)
        pending = deque(range(len(items)))
        remaining = len(items)
        while remaining:
            now = time.monotonic()
            for worker in self._workers:
                if worker.ready and worker.job is None and pending:
                    index = pending.popleft()
                    worker.requests.send((index, items[index]))
                    worker.job, worker.deadline = index, now + self.timeout
            busy = [w for w in self._workers if w.job is not None]
            next_deadline = min((w.deadline for w in busy), default=now + 1.0)
            ready = wait([w.conn for w in self._workers], timeout=max(0.0, next_deadline - now))
            for worker in [w for w in self._workers if w.conn in ready]:
                remaining -= self._receive(worker, results)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.job is not None and now >= worker.deadline:
                    results[worker.job] = (False, TimedOut(f"timed out after {self.timeout:g} s"))
                    self.stats.timeouts += 1
                    remaining -= 1
                    self._replace(worker)
                elif not worker.ready and now - worker.started > _START_TIMEOUT_S:
                    self.close()
                    raise RuntimeError(f"a reward worker did not start within {_START_TIMEOUT_S:g} s")
        self.stats.items += len(items)
        return results  # type: ignore[return-value]  # every slot was filled above

    def _receive(self, worker: _Worker, results: list) -> int:
        """Handle one message (or the death) of ``worker``; return how many items it finished (0 or 1)."""
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):  # the worker died (out of memory, segfault in a C extension, ...)
            index = worker.job
            if not worker.ready:
                self.close()
                raise RuntimeError(
                    "a reward worker exited while starting (its error is printed above, on stderr)"
                ) from None
            self._replace(worker)
            if index is None:
                return 0
            results[index] = (False, "the worker process died")
            self.stats.errors += 1
            return 1
        if message == _READY:
            worker.ready = True
            return 0
        if message[0] == "init_error":
            self.close()
            cause = message[1].strip().splitlines()[-1]
            raise RuntimeError(f"a reward worker failed to start: {cause}\n{message[1]}")
        index, ok, value = message
        worker.job = None
        results[index] = (ok, value)
        if not ok:
            self.stats.errors += 1
            self.stats.last_errors = [*self.stats.last_errors[-4:], value]
        return 1
