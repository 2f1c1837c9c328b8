"""TimeoutPool: per-item wall-clock limits, errors and crashes never take the caller down."""

import os
import time

import pytest

from neggrad.tasks.verifiers.pool import TimeoutPool, import_path


# Worker functions must live at module level: the worker processes import them by name.
def _square(x: int) -> int:
    return x * x


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _fail(x: int) -> int:
    raise ZeroDivisionError(f"cannot do {x}")


def _crash(x: int) -> int:
    os._exit(3)  # a hard death, as a segfault in a C extension would be


def _bad_init() -> None:
    raise RuntimeError("missing dependency")


def test_results_come_back_in_order_and_workers_stay_up():
    with TimeoutPool(_square, workers=2, timeout=5) as pool:
        assert pool.map([3, 1, 2]) == [(True, 9), (True, 1), (True, 4)]
        pids = pool.pids
        assert pool.map([]) == []
        assert pool.map([4]) == [(True, 16)]
        assert pool.pids == pids


def test_a_slow_item_times_out_alone():
    with TimeoutPool(_nap, workers=2, timeout=0.5) as pool:
        pool.start()  # start the workers outside the timed part
        start = time.monotonic()
        results = pool.map([30.0, 0.1])
        elapsed = time.monotonic() - start
    assert results[0][0] is False and "timed out after 0.5 s" in results[0][1]
    assert results[1] == (True, 0.1)
    assert 0.5 <= elapsed < 2.5
    assert pool.stats.timeouts == 1 and pool.stats.restarts == 1


def test_an_error_fails_its_item_only():
    with TimeoutPool(_fail, workers=1, timeout=5) as pool:
        results = pool.map([1, 2])
        pids = pool.pids
    assert [ok for ok, _ in results] == [False, False]
    assert "ZeroDivisionError: cannot do 1" in results[0][1]
    assert pool.stats.errors == 2 and pool.stats.restarts == 0 and len(pids) == 1


def test_a_crashed_worker_is_replaced():
    with TimeoutPool(_crash, workers=1, timeout=5) as pool:
        assert pool.map([1]) == [(False, "the worker process died")]
        assert pool.stats.restarts == 1


def test_a_failing_initializer_is_reported():
    pool = TimeoutPool(_square, workers=1, timeout=5, initializer=_bad_init)
    with pytest.raises(RuntimeError, match="failed to start: RuntimeError: missing dependency"):
        pool.map([1])


def test_closed_pool_refuses_work_and_lambdas_are_refused():
    pool = TimeoutPool(_square, workers=1, timeout=5)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.map([1])
    with pytest.raises(ValueError, match="top of a module"):
        import_path(lambda x: x)
