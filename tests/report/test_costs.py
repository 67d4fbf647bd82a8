"""Peak memory is measured per trial: what an earlier trial used does not carry over."""

from pathlib import Path

import pytest
import torch

from ablate.train.cost import PeakMemory

MIB = 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_cpu_peak_memory_is_per_trial():
    first = PeakMemory(torch.device("cpu"))
    big = torch.ones(256 * MIB // 4)  # 256 MiB, touched
    first_peak = first.mb()
    del big
    second = PeakMemory(torch.device("cpu"))  # the next trial starts
    small = torch.ones(MIB // 4)
    second_peak = second.mb()
    del small
    assert first_peak - second_peak > 200  # the first trial's 256 MiB is not in the second's


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_is_per_trial():
    device = torch.device("cuda")
    first = PeakMemory(device)
    big = torch.ones(256 * MIB // 4, device=device)
    first_peak = first.mb()
    del big
    second = PeakMemory(device)
    small = torch.ones(MIB // 4, device=device)
    assert first_peak >= 256 and second.mb() < 64
    del small


def test_no_per_trial_figure_without_a_way_to_reset(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("clear_refs")

    monkeypatch.setattr(Path, "write_text", refuse)
    assert PeakMemory(torch.device("cpu")).mb() is None
