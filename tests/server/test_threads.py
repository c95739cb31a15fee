"""The serving process's OpenMP wait policy: a bounded spin unless the user chose one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localseek.server.threads import SPIN_COUNT, bound_thread_spinning, threads_leave_cores_idle


def test_bounded_spin_is_set_when_the_user_chose_nothing():
    env = {"PATH": "/bin"}
    bound_thread_spinning(env)
    assert env == {"PATH": "/bin", "GOMP_SPINCOUNT": SPIN_COUNT}
    assert threads_leave_cores_idle(env)


@pytest.mark.parametrize(
    "chosen",
    [{"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "passive"}, {"GOMP_SPINCOUNT": "0"}],
)
def test_a_users_policy_or_spin_count_is_left_alone(chosen):
    env = dict(chosen)
    bound_thread_spinning(env)
    assert env == chosen


@pytest.mark.parametrize(
    ("env", "idle"),
    [
        ({}, False),  # libgomp's default spin holds the cores: leave one for HTTP
        ({"OMP_WAIT_POLICY": "ACTIVE"}, False),
        ({"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "20000"}, False),
        ({"OMP_WAIT_POLICY": "Passive"}, True),
        ({"GOMP_SPINCOUNT": "20000"}, True),
    ],
)
def test_which_policies_let_the_engine_use_every_core(env, idle):
    assert threads_leave_cores_idle(env) is idle


def test_the_cli_module_does_not_load_torch():
    """The spin count is read once, when torch loads its OpenMP runtime: the CLI must set it
    first, so importing the CLI must not import torch."""
    code = "import sys, localseek.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
