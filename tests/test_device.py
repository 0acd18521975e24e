"""scratchgpt.device: auto picks CUDA, then mps, then the CPU; bf16 autocast where the device has
fast bf16, refused with one line where it would be emulated; fp32 adds nothing."""

import contextlib

import pytest
import torch

from scratchgpt import device as dev
from scratchgpt.book.settings import PRECISIONS, TrainConfig


@pytest.fixture
def machine(monkeypatch):
    """Set which accelerators this 'machine' has: machine(cuda=..., mps=...)."""

    def have(cuda: bool = False, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return have


@pytest.mark.parametrize(
    ("cuda", "mps", "picked"),
    [(True, True, "cuda:0"), (True, False, "cuda:0"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_picks_cuda_then_mps_then_cpu(machine, cuda, mps, picked):
    machine(cuda=cuda, mps=mps)
    assert str(dev.pick_device("auto")) == picked
    assert str(dev.pick_device("cpu")) == "cpu"


def test_a_named_device_that_is_absent_is_refused_by_name(machine):
    machine()
    with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):
        dev.pick_device("cuda:1")
    with pytest.raises(ValueError, match="'mps' requested but Apple's mps is not available"):
        dev.pick_device("mps")
    machine(mps=True)
    assert dev.pick_device("mps").type == "mps"


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the region is built, not entered
@pytest.mark.parametrize("kind", ["cpu", "cuda", "mps"])
def test_bf16_autocasts_to_bf16_on_every_device_and_fp32_adds_nothing(kind):
    where = torch.device(kind)
    with contextlib.ExitStack() as stack:
        region = dev.autocast(where, "bf16")
        assert isinstance(region, torch.autocast)
        assert region.device == kind and region.fast_dtype == torch.bfloat16
        if kind == "cpu":
            stack.enter_context(region)
            x = torch.randn(4, 8)
            assert (x @ torch.randn(8, 2)).dtype == torch.bfloat16
    assert isinstance(dev.autocast(where, "fp32"), contextlib.nullcontext)
    assert (torch.randn(4, 8) @ torch.randn(8, 2)).dtype == torch.float32


@pytest.mark.parametrize(
    ("flags", "arch", "fast"),
    [
        ({"avx2", "fma"}, "x86_64", False),
        ({"avx512f", "avx512_bf16"}, "x86_64", True),
        ({"avx512f", "amx_bf16", "amx_tile"}, "x86_64", True),
        ({"asimd", "bf16"}, "aarch64", True),
        ({"asimd"}, "aarch64", False),
        (set(), "x86_64", False),  # no /proc/cpuinfo: unknown, so not fast
    ],
)
def test_cpu_bf16_is_fast_only_with_amx_or_avx512_bf16(monkeypatch, flags, arch, fast):
    monkeypatch.setattr(dev, "cpu_flags", lambda: flags)
    monkeypatch.setattr(dev, "cpu_name", lambda: "Some CPU 9000")
    monkeypatch.setattr(dev.platform, "machine", lambda: arch)
    cpu = torch.device("cpu")
    if fast:
        assert dev.bf16_problem(cpu) is None
        dev.check_precision("bf16", cpu)
        return
    assert dev.bf16_problem(cpu) == "this CPU (Some CPU 9000) has neither AMX nor AVX-512 BF16"
    with pytest.raises(dev.PrecisionUnsupported) as refused:
        dev.check_precision("bf16", cpu)
    message = str(refused.value)
    assert message == (
        "precision bf16: this CPU (Some CPU 9000) has neither AMX nor AVX-512 BF16, so it would crawl; "
        "use fp32 on this device"
    )
    assert "\n" not in message
    dev.check_precision("fp32", cpu)  # fp32 runs anywhere


def test_cuda_and_mps_without_native_bf16_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    with pytest.raises(dev.PrecisionUnsupported, match="Tesla T4 has no native bf16.*use fp32"):
        dev.check_precision("bf16", torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    dev.check_precision("bf16", torch.device("cuda", 0))
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)
    with pytest.raises(dev.PrecisionUnsupported, match="mps has bf16 from macOS 14 on"):
        dev.check_precision("bf16", torch.device("mps"))
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: (major, minor) <= (14, 0))
    dev.check_precision("bf16", torch.device("mps"))


def test_the_precisions_are_declared_once():
    assert PRECISIONS == ("fp32", "bf16")
    assert TrainConfig(epochs=1, batch_size=1, lr=1e-3).precision == "fp32"
