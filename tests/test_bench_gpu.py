"""bench/gpu.py, the GPU check, runs end to end on the CPU with --tiny: every row of its table
is there, measured, or says why it was not run (bf16 on a CPU without fast bf16)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_tiny_on_the_cpu(mirror, tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--tiny", "--keep", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "SCRATCHGPT_MIRROR": str(mirror)},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("device: ") and "TFLOP/s" in lines[0]
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| row")]
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in table[1:])}
    assert list(rows) == [
        "train step without torch.compile (bf16)" if "bf16" in table[1] else "train step without torch.compile (fp32)",
        table[2].split(" | ")[0].strip("| "),
        "chapter 5 end to end, fp32",
        "chapter 5 end to end, bf16",
        "default DAG, device cpu",
        "pretrain under torchrun, 1 process",
    ]
    for name, (result, _) in rows.items():
        if name.startswith("train step"):
            assert re.fullmatch(r"[\d,]+ tokens/s, MFU \d+\.\d%", result), result
        elif result == "not run":
            assert name == "chapter 5 end to end, bf16"
        else:
            assert re.fullmatch(r"\d+\.\d s", result), (name, result)
    work = tmp_path / "w"
    assert (work / "dag" / "models" / "dpo" / "config.json").is_file(), "the whole DAG ran"
    assert (work / "torchrun" / "models" / "pretrained" / "config.json").is_file()
    assert "precision: fp32" in (work / "ch05-fp32" / "params.yaml").read_text()
