"""Past one machine: the tiny study on a real SLURM cluster through the repository's profile, and a
second clone that gets the results through a DVC remote instead of training them again.

The SLURM cluster is real: one node on this machine, brought up by ``tests/slurm/cluster`` for the
session (root and Debian's slurmctld, slurmd, slurm-client and munge; skipped, saying why, without
them; ``.ci/run`` installs them and sets CONVBENCH_REQUIRE_SLURM=1, which turns the skip into a
failure).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from test_pipeline import EXPERIMENTS, ROOT, RUNS, TINY_STUDY, make_project, planned_jobs, run, run_files

pytestmark = pytest.mark.slow

CLUSTER = ROOT / "tests/slurm/cluster"
# What the test cluster changes in profiles/slurm, and nothing else: it has no accounting, so job
# states come from squeue, not sacct; and a small study's jobs are polled every second or so.
TEST_CLUSTER_OVERRIDES = [
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "1",
    "--seconds-between-status-checks", "1",
]
SLURM_RUN = ["snakemake", "--profile", "profiles/slurm", "--workflow-profile", "none"]
# The tiny study's jobs, rule by rule (its `all` rule runs on the submitting machine)
JOBS_PER_RULE = {"check": 1, "download": 1, "prepare": 1, "split": 2, "run": len(EXPERIMENTS),
                 "aggregate_experiment": len(EXPERIMENTS), "aggregate": 1, "report": 1}


# ---------------------------------------------------------------------------------- the cluster


def _cannot_run_slurm(reason: str) -> None:
    """Skip, or fail where the SLURM tests must run (CONVBENCH_REQUIRE_SLURM=1, as in .ci/run)."""
    if os.environ.get("CONVBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"CONVBENCH_REQUIRE_SLURM=1 but the SLURM test cluster cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A single-node SLURM cluster on this machine for the session (``tests/slurm/cluster up``),
    stopped at the end (``down``: only the daemons it started, by their PIDs)."""
    missing = [name for name in ("slurmctld", "slurmd", "munged", "sbatch")
               if shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None]
    if missing:
        _cannot_run_slurm(f"SLURM is not installed ({', '.join(missing)} not found): apt-get install "
                          "-y --no-install-recommends slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        _cannot_run_slurm("the SLURM test cluster needs root (slurmd starts jobs as their users)")
    started = time.monotonic()
    up = subprocess.run([CLUSTER, "up"], capture_output=True, text=True)
    up_seconds = time.monotonic() - started
    if up.returncode == 3:  # this machine cannot host it (the script says why)
        _cannot_run_slurm(up.stderr.strip())
    if up.returncode != 0:
        subprocess.run([CLUSTER, "down"], capture_output=True)  # what it started, if anything
        pytest.fail(f"tests/slurm/cluster up exited {up.returncode}:\n{up.stderr}")
    print(f"SLURM test cluster up in {up_seconds:.1f} s")
    yield
    started = time.monotonic()
    down = subprocess.run([CLUSTER, "down"], capture_output=True, text=True)
    down_seconds = time.monotonic() - started
    assert down.returncode == 0, f"tests/slurm/cluster down exited {down.returncode}:\n{down.stderr}"
    print(f"SLURM test cluster down in {down_seconds:.1f} s")
    assert up_seconds + down_seconds < 60, f"bring-up {up_seconds:.1f} s + teardown {down_seconds:.1f} s"


def slurm_jobs(run_id: str) -> dict[str, dict[str, str]]:
    """The SLURM jobs of one Snakemake run (its jobs are named after the run's id), by job id:
    rule (from the comment the plugin gives each job), state and partition."""
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id,
                          "--format=%i|%k|%T|%P"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        job_id, comment, state, partition = line.split("|")
        rule = re.fullmatch(r"rule_(.+?)(_wildcards_.*)?", comment).group(1)
        jobs[job_id] = {"rule": rule, "state": state, "partition": partition}
    return jobs


def job_details(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "--details", job_id],
                          capture_output=True, text=True, check=True).stdout


# ---------------------------------------------------------------------------------- the study


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study's project with the repository's profiles, committed, nothing run yet: every
    test runs a clone of it (`git clone`: the same commit, so the same code_version in results)."""
    project = make_project(tmp_path_factory.mktemp("cluster") / "origin", TINY_STUDY)  # profiles included
    assert (project / "profiles/slurm/config.yaml").exists()
    assert not run(["git", "status", "--porcelain"], project).stdout  # committed
    return project


def clone(origin: Path, path: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(path)], origin)
    return path


@pytest.fixture(scope="module")
def local_run(fresh_clone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run on this machine (profiles/default, as a user's `snakemake`)."""
    project = clone(fresh_clone, tmp_path_factory.mktemp("local") / "project")
    run(["snakemake", "--cores", "2"], project)
    return project


def test_the_slurm_profile_asks_a_gpu_for_the_run_jobs(fresh_clone: Path) -> None:
    """What profiles/slurm and the rules give each job, as Snakemake resolves it (no cluster)."""
    out = run([*SLURM_RUN, "--dry-run", "--printshellcmds"], fresh_clone).stdout
    resources = {rule: dict(re.findall(r"(\w+)=([^,\s]+)", line))
                 for rule, line in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, flags=re.M)}
    assert resources["run"]["gpu"] == "1" and resources["run"]["slurm_partition"] == "gpu"
    for rule in ("download", "prepare", "split", "aggregate_experiment", "aggregate", "report"):
        assert "gpu" not in resources[rule] and "slurm_partition" not in resources[rule]  # the default partition
    assert {r["slurm_account"] for r in resources.values()} == {"your_account"}
    # the rule's: 2 hours for each of the experiment's runs
    assert resources["run"]["runtime"] == str(120 * len(RUNS)) and resources["run"]["mem_mb"] == "4000"
    # a job's CPUs are its threads: the study's (sbatch --cpus-per-task), as in a local run
    assert set(re.findall(r"--threads (\d+)", out)) == {str(TINY_STUDY["threads"])}


@pytest.mark.slurm
def test_the_study_on_slurm_is_bit_identical_to_a_local_run(
    slurm_cluster: None, fresh_clone: Path, local_run: Path, tmp_path: Path
) -> None:
    project = clone(fresh_clone, tmp_path / "slurm")
    proc = run([*SLURM_RUN, *TEST_CLUSTER_OVERRIDES], project)
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr).group(1)

    # every job of the study went through sbatch, and finished
    jobs = slurm_jobs(run_id)
    per_rule = {rule: sum(job["rule"] == rule for job in jobs.values()) for rule in JOBS_PER_RULE}
    assert per_rule == JOBS_PER_RULE and len(jobs) == sum(JOBS_PER_RULE.values())
    assert {job["state"] for job in jobs.values()} == {"COMPLETED"}
    # the run jobs (training and evaluation) asked for one GPU and were given one, on the profile's
    # GPU partition; the other jobs asked for none, on the cluster's default partition (cpu)
    for job_id, job in jobs.items():
        details = job_details(job_id)
        assert f"NumCPUs={TINY_STUDY['threads']} " in details  # the study's threads
        assert "MinMemoryNode=4000M" in details  # the rules' (and the profile's default) mem_mb
        if job["rule"] == "run":
            assert job["partition"] == "gpu"
            assert re.search(r"TresPerJob=gres[:/]gpu:1\b", details), details
            assert "JOB_GRES=gpu:1" in details, details
            assert "TimeLimit=08:00:00" in details  # the rule's runtime: 120 minutes x 4 runs
        else:
            assert job["partition"] == "cpu"
            assert "TresPerJob" not in details and "JOB_GRES=(null)" in details, details

    assert run_files(project) == run_files(local_run)  # every model.pt and metrics.json, byte for byte
    assert (project / "reports/report.html").stat().st_size > 0
    assert "Nothing to be done" in run(["snakemake", "--dry-run", "--cores", "1"], project).stdout


# ------------------------------------------------------------------------ a shared DVC remote


def test_a_second_clone_pulls_the_results_instead_of_training(local_run: Path, tmp_path: Path) -> None:
    """README, "Sharing results through a DVC remote", command for command: a directory remote as
    a cluster's shared filesystem gives it, pushed from the clone that ran, pulled in another."""
    first = shutil.copytree(local_run, tmp_path / "first", symlinks=True)  # keeps the mtimes
    shared = tmp_path / "shared"
    shared.mkdir()
    run(["dvc", "remote", "add", "-d", "shared", str(shared)], first)
    run(["dvc", "commit", "-f"], first)  # the Snakemake run's outputs into dvc.lock
    run(["git", "add", "dvc.lock", ".dvc/config"], first)
    run(["git", "commit", "-qm", "results"], first)
    run(["dvc", "push"], first)

    second = clone(first, tmp_path / "second")
    assert planned_jobs(second)["run"] == len(EXPERIMENTS)  # nothing there yet
    run(["dvc", "pull"], second)
    assert "Data and pipelines are up to date." in run(["dvc", "status"], second).stdout
    run(["snakemake", "--cores", "1", "--touch"], second)

    assert "Nothing to be done" in run(["snakemake", "--dry-run", "--cores", "1"], second).stdout
    assert "Data and pipelines are up to date." in run(["dvc", "status"], second).stdout
    # everything the first clone made arrived, byte for byte: data, splits, checkpoints, metrics,
    # learning curves, experiment and study results, the report; not the runs' by-products that
    # hold wall-clock timings (.dvcignore: DVC neither tracks nor shares them)
    made = {path.relative_to(first) for top in ("data", "results", "reports")
            for path in (first / top).rglob("*") if path.is_file()}
    timings = {path for path in made if path.name in ("history.csv", "perf.json") or "_timings" in path.parts}
    assert len(timings) == 3 * len(EXPERIMENTS) * len(RUNS)  # and each model's perf.json in results/_timings
    assert {Path("reports/report.html"), Path("results/study.json"),
            Path(f"results/_curves/mlp/{RUNS[0]}.csv")} <= made
    assert all((second / path).read_bytes() == (first / path).read_bytes() for path in made - timings)
    assert not any((second / path).exists() for path in timings)
    # and nothing ran: --touch leaves empty logs and no benchmark files (a run job writes both)
    assert not (second / "logs/tiny/benchmark").exists()
    assert all(path.stat().st_size == 0 for path in (second / "logs").rglob("*") if path.is_file())
