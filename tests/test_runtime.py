"""planetcd.runtime.tune_allocator: applied once per process, and left alone when asked."""

import subprocess
import sys

CODE = "from planetcd.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"


def _run(env_extra):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True).stdout.split()


def test_tune_allocator_once_and_opt_out():
    on = _run({})
    assert on[0] == on[1] and on[0] in ("True", "False")  # False only off glibc
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert on == ["True", "True"]
    assert _run({"PLANETCD_MALLOC_TUNING": "off"}) == ["False", "False"]
    assert _run({"MALLOC_MMAP_THRESHOLD_": "1048576"}) == ["False", "False"]  # the user's own setting wins
