"""benchmarks/gpu_check.sh, the one-shot GPU check, run on the CPU at a tiny size (its smoke mode).

A GPU session has minutes of device time; a script that breaks there wastes them. This runs the same script
on the CPU and checks that it prints its header and one table row per step, in order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("trunk floor (2 images)", "detect (", "unet floor (1 image)", "segment (scales ")


def test_gpu_check_smoke_on_cpu_prints_a_row_per_step(vgg_weights, tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "SIZE": "256", "PLANETCD_VGG16_WEIGHTS": str(vgg_weights),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(tmp_path)}
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert any(line.startswith("GPU: cpu; device cpu;") and "pair 256x256" in line for line in lines), run.stdout
    rows = [next(i for i, line in enumerate(lines) if line.startswith(step)) for step in STEPS]
    assert rows == sorted(rows)
    for i in rows:
        numbers = re.findall(r"\s(\d+\.\d+)", lines[i])
        assert len(numbers) >= 3 and float(numbers[0]) > 0, lines[i]  # the share of peak is "—" on a CPU
    assert lines[-1].startswith("(whole check ")


def test_gpu_check_refuses_cuda_without_nvidia_smi(tmp_path):
    tools = tmp_path / "bin"  # a PATH with what the script needs before its check, and no nvidia-smi
    tools.mkdir()
    (tools / "dirname").symlink_to(shutil.which("dirname"))
    env = {**os.environ, "DEVICE": "cuda", "PATH": str(tools)}
    run = subprocess.run([shutil.which("bash"), str(REPO / "benchmarks" / "gpu_check.sh")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == ["gpu_check: no nvidia-smi on this machine (DEVICE=cpu runs the script on the CPU)"]
