"""The ``neggrad`` command's OpenMP wait policy: threads that sleep at once only when some would lack a free core."""

import os

from neggrad.cli import busy_cores, choose_omp_wait_policy, omp_wait_policy


def test_threads_sleep_only_when_the_cores_are_not_free():
    assert omp_wait_policy(cpus=2, busy=0.05, threads=2) is None  # idle: libgomp's spin-then-sleep
    assert omp_wait_policy(cpus=2, busy=1.0, threads=2) == "PASSIVE"  # one core taken: a peer would be descheduled
    assert omp_wait_policy(cpus=2, busy=1.0, threads=1) is None
    assert omp_wait_policy(cpus=16, busy=6.0, threads=8) is None
    assert omp_wait_policy(cpus=16, busy=9.0, threads=8) == "PASSIVE"


def test_the_environment_decides_when_it_sets_the_policy(monkeypatch):
    import neggrad.cli as cli

    monkeypatch.setattr(cli, "busy_cores", lambda: 64.0)  # a machine far busier than its cores
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    choose_omp_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {"OMP_NUM_THREADS": "2"}
    choose_omp_wait_policy(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_NUM_THREADS": "1"}  # one thread waits for no peer
    choose_omp_wait_policy(env)
    assert "OMP_WAIT_POLICY" not in env
    monkeypatch.setattr(cli, "busy_cores", lambda: 0.0)
    env = {"OMP_NUM_THREADS": "2"}
    choose_omp_wait_policy(env)
    assert "OMP_WAIT_POLICY" not in env or len(os.sched_getaffinity(0)) < 2


def test_busy_cores_reads_a_share_of_the_machine():
    busy = busy_cores(0.02)
    assert busy is None or 0.0 <= busy <= (os.cpu_count() or 1)


def test_the_command_chooses_before_torch_loads_and_not_after(monkeypatch):
    import subprocess
    import sys

    from neggrad.cli import main

    # 64 threads on this machine: more than its free cores, so the choice is PASSIVE whatever else runs
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_NUM_THREADS": "64"}
    code = "import os, neggrad.cli as c; c.main(['methods']); print('policy', os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "policy PASSIVE" in out
    # in a process where torch is already loaded the policy is fixed: main leaves the environment alone
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert main(["methods"]) == 0
    assert "OMP_WAIT_POLICY" not in os.environ
