"""benchmarks/gpu_check.py: the first-contact-with-a-GPU check, run here as ``--quick`` on the CPU
(the same code at toy scale), plus what makes it robust: a failing section is recorded, the rest
still run, and the exit code says so; a byte that differs between the determinism passes is found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark_scripts import ROOT, load_benchmark


def load_check():
    return load_benchmark("gpu_check")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU run; a GPU machine runs the full check")
def test_quick_check_on_the_cpu_runs_every_section(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = result["sections"]
    assert list(sections) == ["environment", "determinism", "speed", "estimate", "two_gpus", "compile"]
    assert result["status"] == "passed" and result["failed"] == [] and result["quick"] is True

    env = sections["environment"]
    assert env["status"] == "passed" and env["asked"] == "cpu" and env["used_device"] == "cpu"
    assert env["torch"] == torch.__version__ and env["cuda_built"] == torch.version.cuda
    assert env["gpus"] == [] and env["cuda_usable"] is False
    assert set(env["fp32_precision_defaults"]) == {"cuda_matmul", "cudnn_conv"}
    # no silent fallback: what a job told to use CUDA does on this machine
    assert env["cuda_refusal"].startswith("device 'cuda' was asked for, but CUDA is not usable: ")

    det = sections["determinism"]
    assert det["status"] == "passed", det
    assert det["experiments"] == ["lenet", "lenet_bn", "mlp_dropout"]
    assert det["runs"] == 6 and det["files_compared"] == 12 and det["files_differing"] == []
    assert [p["returncode"] for p in det["passes"].values()] == [0, 0]
    assert len(det["device_records"]) == 1
    assert det["device_records"][0] == {"asked": "cpu", "used": "cpu:x86_64:2 threads", "fallback": None,
                                        "tf32": False}
    run = tmp_path / "work/results/pass1-smoke/lenet_bn/r0-fold1-seed0/metrics.json"
    metrics = json.loads(run.read_text())
    assert metrics["recipe"]["deterministic"] is True and metrics["recipe"]["smoke"] == 1
    assert metrics["dataset"] == "digits"

    speed = sections["speed"]
    assert speed["status"] == "passed" and list(speed["networks"]) == ["lenet", "mlp_dropout", "mini_resnet"]
    lenet = speed["networks"]["lenet"]
    assert (lenet["input_size"], lenet["batch_size"], lenet["d2l_v100_examples_per_s"]) == (28, 256, 55297)
    for name, row in speed["networks"].items():
        modes = row["modes"]
        assert list(modes) == ["fp32", "tf32", "bf16", "fp16", "channels_last", "compile"]
        for mode in ("fp32", "bf16", "channels_last"):
            assert modes[mode]["status"] == "passed", (name, mode)
            assert modes[mode]["examples_per_s"] > 0 and modes[mode]["peak_memory_mib"] > 0
            assert modes[mode]["examples_per_s"] == pytest.approx(row["batch_size"] / modes[mode]["step_s"])
        assert modes["tf32"] == modes["fp16"] == {"status": "skipped", "reason": "needs CUDA"}
        assert modes["compile"]["status"] == ("passed" if name == "mlp_dropout" else "skipped")
    assert speed["networks"]["mlp_dropout"]["modes"]["compile"]["examples_per_s"] > 0

    est = sections["estimate"]
    assert est["status"] == "passed" and est["experiments_estimated"] == 3 and est["experiments_in_study"] == 16
    assert set(est["experiments"]) == {"lenet", "mlp_dropout", "mini_resnet"}
    assert est["total_seconds"] == pytest.approx(sum(e["seconds"] for e in est["experiments"].values()))
    assert est["experiments"]["lenet"]["runs"] == 5 and est["experiments"]["lenet"]["steps_per_epoch"] == 187

    assert sections["two_gpus"] == {"status": "skipped", "reason": "needs 2 GPUs, 0 visible",
                                    "seconds": sections["two_gpus"]["seconds"]}
    page = (tmp_path / "gpu_check.md").read_text()
    assert page.startswith("## gpu_check --quick: ")
    assert "| lenet | 28 | 256 | 55,297 | " in page and "skipped: needs CUDA" in page
    assert "12 files compared byte for byte, 0 differing" in page


def test_a_failing_section_is_recorded_the_others_still_run_and_the_exit_code_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = load_check()

    def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")

    ran = []
    monkeypatch.setattr(check, "determinism", broken)
    monkeypatch.setattr(check, "speed", lambda *a, **k: ran.append("speed") or {
        "status": "passed", "device": "cpu", "networks": {}, "failed": []})
    monkeypatch.setattr(check, "study_estimate", lambda *a: ran.append("estimate") or {"status": "passed"})
    assert check.main(["--quick", "--out", str(tmp_path)]) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["status"] == "failed" and result["failed"] == ["determinism"]
    failed = result["sections"]["determinism"]
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"
    assert any("CUDNN_STATUS_NOT_SUPPORTED" in line for line in failed["traceback"])
    assert ran == ["speed", "estimate", "speed"]  # speed, the estimate and compile ran after it
    assert result["sections"]["environment"]["status"] == "passed"
    assert "- **determinism**: failed: RuntimeError: cuDNN error" in (tmp_path / "gpu_check.md").read_text()


def test_the_passes_are_compared_byte_for_byte(tmp_path: Path) -> None:
    check = load_check()
    record = {"asked": "cuda", "used": "cuda:NVIDIA H100", "fallback": None, "tf32": False}
    for side in ("a", "b"):
        for run in ("lenet/r0-fold0-seed0", "lenet/r0-fold1-seed0"):
            (tmp_path / side / run).mkdir(parents=True)
            (tmp_path / side / run / "model.pt").write_bytes(b"weights")
            (tmp_path / side / run / "metrics.json").write_text(json.dumps({"device": record}))
    assert check.compare_passes(tmp_path / "a", tmp_path / "b") == {
        "runs": 2, "files_compared": 4, "files_differing": [], "device_records": [record]}
    (tmp_path / "b/lenet/r0-fold1-seed0/model.pt").write_bytes(b"weightz")
    (tmp_path / "a/lenet/r0-fold0-seed0/metrics.json").unlink()
    compared = check.compare_passes(tmp_path / "a", tmp_path / "b")
    assert compared["files_differing"] == ["lenet/r0-fold0-seed0/metrics.json", "lenet/r0-fold1-seed0/model.pt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_without_cuda_the_full_check_fails_instead_of_measuring_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check asks for cuda by default: on a machine without it, every section that needs the
    GPU fails with the reason, none silently measures the CPU, and the exit code is 1."""
    check = load_check()
    asked = []
    monkeypatch.setattr(check, "determinism", lambda out, device, quick, threads: asked.append(device) or {
        "status": "skipped", "reason": "not under test"})
    assert check.main(["--out", str(tmp_path)]) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["device"] == "cuda" and asked == ["cuda"]
    assert result["failed"] == ["environment", "speed", "compile"]
    for name in result["failed"]:
        assert result["sections"][name]["error"].startswith(
            "DeviceError: device 'cuda' was asked for, but CUDA is not usable: "), name
    assert result["sections"]["estimate"] == {"status": "skipped", "reason": "no speed measured", "seconds": 0.0}
    assert result["sections"]["two_gpus"]["status"] == "skipped"
