import subprocess
import sys
import time

import torch

from bfnas.threads import fit_torch_threads, free_cores


def test_training_takes_the_free_cores_only(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    default = torch.get_num_threads()
    try:
        assert fit_torch_threads(free=0.1)["threads"] == 1  # never none
        assert torch.get_num_threads() == 1
        torch.set_num_threads(default)
        assert fit_torch_threads(free=64.0)["threads"] == default  # never more than torch's own
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert fit_torch_threads(free=0.1) == {"threads": default, "why": "OMP_NUM_THREADS"}
    finally:
        torch.set_num_threads(default)


def test_a_busy_core_is_not_counted_free():
    quiet = free_cores(0.3)
    burner = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        time.sleep(0.3)
        busy = free_cores(0.5)
    finally:
        burner.kill()
        burner.wait()
    assert busy < quiet - 0.5, (quiet, busy)
