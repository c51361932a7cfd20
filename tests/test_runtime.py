"""planetcd.runtime: the allocator tuning is opt-in, applied once per process, and yields to the user's own."""

import os
import platform
import subprocess
import sys

CODE = ("from planetcd.runtime import tune_allocator, tune_allocator_from_env; "
        "print(tune_allocator_from_env(), tune_allocator(), tune_allocator())")


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "PLANETCD_MALLOC_TUNING"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True).stdout.split()


def test_allocator_tuning_is_opt_in_and_once():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    applied = "True" if glibc else "False"
    assert _run({}) == ["False", applied, applied]  # not asked: from_env does nothing; an explicit call applies
    assert _run({"PLANETCD_MALLOC_TUNING": "on"}) == [applied, applied, applied]
    assert _run({"PLANETCD_MALLOC_TUNING": "on", "MALLOC_MMAP_THRESHOLD_": "1048576"}) == ["False"] * 3
