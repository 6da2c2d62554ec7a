"""The pipeline end to end, on a tiny real study: Snakemake and DVC run the same DAG, a second run
finds nothing to do, a forced rerun is bit-identical, and bad params are refused before any job.

Runs in a copy of the pipeline files inside a fresh git + DVC repository, like a user's clone.
The study is run once by each engine (the ``project`` and ``finished`` fixtures); both are read
only, and a test that changes anything works on its own copy (``copy_of``: mtimes kept), so every
test can run alone or in any order.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from convbench.study import REPORT_FIGURES, SMOKE_EPOCHS

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("lenet_relu", "mlp")
FOLDS = 2
REPEATS = 2
RUNS = [f"r{r}-fold{k}-seed0" for r in range(REPEATS) for k in range(FOLDS)]
TINY_STUDY = {
    "study": "tiny",
    "description": "two small networks, 2 x 2-fold cross-validation, two epochs",
    "dataset": "digits",
    "folds": FOLDS,
    "repeats": REPEATS,
    "seed": 0,
    "seeds": [0],
    "threads": 1,
    "results_dir": "results",
    "reports_dir": "reports",
    "recipe": {"lr": 0.05, "batch_size": 64, "epochs": 2, "weight_decay": 0.0005},
    "experiments": {
        "lenet_relu": {"arch": "lenet", "input_size": 12, "knobs": {"activation": "relu", "pool": "max"}},
        "mlp": {"arch": "mlp", "input_size": 8},
    },
    "ablations": {"convolutions": {"baseline": "mlp", "treatment": "lenet_relu",
                                   "question": "Does LeNet beat the MLP?"}},
}

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if (cwd / "src/convbench").is_dir():  # the project's own copy of the code runs, and is tracked
        env["PYTHONPATH"] = str(cwd / "src")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def write_study(project: Path, study: dict) -> None:
    """conf/study/<name>.yaml as the default of conf/config.yaml, and params.yaml composed from it."""
    from dvc.utils.hydra import compose_and_dump

    (project / "conf/study").mkdir(parents=True, exist_ok=True)
    (project / "conf/study" / f"{study['study']}.yaml").write_text(
        "# @package _global_\n" + yaml.safe_dump(study, sort_keys=False)
    )
    default = "  - study: digits\n"  # the repository's conf/config.yaml, with this study as default
    config = (ROOT / "conf/config.yaml").read_text()
    assert default in config
    (project / "conf/config.yaml").write_text(config.replace(default, f"  - study: {study['study']}\n"))
    compose_and_dump(str(project / "params.yaml"), str(project / "conf"), None, "config",
                     str(project), [])


def make_project(path: Path, study: dict, extra: dict[str, Path] | None = None) -> Path:
    """A project of its own (code, workflow, study, git and DVC) with ``extra`` files copied in."""
    path.mkdir()
    for name, source in (extra or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, path / name)
    for name in ("Snakefile", "dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    shutil.copytree(ROOT / "workflow", path / "workflow", symlinks=True)  # workflow/networks: links
    (path / "images").mkdir(exist_ok=True)  # DVC's download stage depends on it (its README only, here)
    shutil.copy(ROOT / "images/README.md", path / "images/README.md")
    shutil.copytree(ROOT / "profiles", path / "profiles")  # profiles/default: picked up by itself
    shutil.copytree(ROOT / "src/convbench", path / "src/convbench", ignore=shutil.ignore_patterns("__pycache__"))
    write_study(path, study)
    run(["git", "init", "-q"], path)
    run(["git", "config", "user.email", "test@convbench.local"], path)
    run(["git", "config", "user.name", "convbench test"], path)
    run(["dvc", "init", "-q"], path)
    shutil.copy(ROOT / ".dvc/config", path / ".dvc/config")  # Hydra on, cache by copy
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "tiny study"], path)
    return path


def run_outputs_planned_by_snakemake(project: Path) -> dict[str, set[str]]:
    """Each `convbench run` job Snakemake would run, by experiment: the files it writes."""
    out = run(["snakemake", "--forceall", "--dry-run", "--cores", "1"], project).stdout
    jobs = re.findall(r"^rule run:\n(?:    .*\n)*?    output: (.*)\n(?:    .*\n)*?    wildcards: experiment=(\w+)",
                      out, flags=re.M)
    return {experiment: set(outputs.split(", ")) for outputs, experiment in jobs}


def run_outputs_planned_by_dvc(project: Path) -> dict[str, set[str]]:
    """Each run@<experiment> stage of dvc.yaml, by experiment: its outputs."""
    out = run(["dvc", "stage", "list"], project).stdout
    return {experiment: {directory} for experiment, directory
            in re.findall(r"^run@(\S+)\s+Outputs (\S+?);?\s", out, flags=re.M)}


def run_files(project: Path) -> dict[str, bytes]:
    """The files a rerun must reproduce bit for bit."""
    return {
        f"{exp}/{r}/{name}": (project / "results" / exp / r / name).read_bytes()
        for exp in EXPERIMENTS for r in RUNS for name in ("model.pt", "metrics.json")
    }


def planned_jobs(project: Path) -> dict[str, int]:
    """Snakemake's dry run: how many jobs of each rule it would run."""
    out = run(["snakemake", "--dry-run", "--cores", "1"], project).stdout
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("Job stats:"):]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)
            if rule != "total"}


def planned_runs(project: Path) -> list[str]:
    """The experiments whose runs Snakemake would train and evaluate again."""
    out = run(["snakemake", "--dry-run", "--printshellcmds", "--cores", "1"], project).stdout
    return sorted(re.findall(r"convbench run .*?--experiment (\S+)", out))


def dvc_changed_stages(project: Path) -> set[str]:
    out = run(["dvc", "status", "--json"], project).stdout
    return set(json.loads(out))


def dvc_repro_runs(project: Path) -> list[str]:
    """The stages `dvc repro` runs (DVC decides a downstream stage only once its inputs exist)."""
    out = run(["dvc", "repro"], project).stdout
    return re.findall(r"^Running stage '([^']+)'", out, flags=re.M)


def copy_of(project: Path, tmp_path: Path) -> Path:
    """A copy to change: mtimes kept (Snakemake's view), links kept (workflow/networks)."""
    return shutil.copytree(project, tmp_path / "copy", symlinks=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run by Snakemake. Read only: a test that changes it works on ``copy_of``."""
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project", TINY_STUDY)
    run(["snakemake", "--cores", "2", "--resources", "gpu=1"], project)
    return project


def test_snakemake_runs_the_whole_study(project: Path) -> None:
    for exp in EXPERIMENTS:
        for name in RUNS:
            run_dir = project / "results" / exp / name
            for file in ("model.pt", "history.csv", "metrics.json", "perf.json"):
                assert (run_dir / file).stat().st_size > 0, run_dir / file
            assert not (run_dir / "checkpoint.pt").exists()
        assert (project / f"logs/tiny/benchmark/run/{exp}.tsv").exists()
        log = (project / f"logs/tiny/run/{exp}.log").read_text()  # each run trained, then scored
        lines = [line for line in log.splitlines() if not line.startswith("convbench: device auto:")]
        assert [line.split(":")[0] for line in lines] == [
            f"{exp} repeat {r} fold {k} seed 0" for r in range(REPEATS) for k in range(FOLDS) for _ in "te"]
    for r in range(REPEATS):  # each repeat its own shuffle
        split = json.loads((project / f"data/splits/digits-k{FOLDS}-s0/repeat{r}.json").read_text())
        assert split["seed"] == r
    metrics = yaml.safe_load((project / "results/study.json").read_text())
    assert set(metrics["experiments"]) == set(EXPERIMENTS)
    mlp = metrics["experiments"]["mlp"]
    assert (mlp["runs"], mlp["repeats"], mlp["folds"]) == (REPEATS * FOLDS, REPEATS, FOLDS)
    # every run counts: the mean is over all of them, read back from their metrics files
    val = [json.loads((project / "results/mlp" / name / "metrics.json").read_text())["val"]["accuracy"]
           for name in RUNS]
    assert mlp["val_acc_mean"] == pytest.approx(sum(val) / len(val))
    assert (project / "reports/report.html").stat().st_size > 0


def test_a_second_run_finds_nothing_to_do(project: Path) -> None:
    out = run(["snakemake", "--cores", "2", "--resources", "gpu=1", "--dry-run"], project).stdout
    assert "Nothing to be done" in out


def test_snakemake_and_dvc_plan_the_same_run_jobs(project: Path) -> None:
    """One job per experiment in both engines, writing the same files: the ones a rerun reproduces
    bit for bit (history.csv and perf.json, which hold timings, are by-products DVC ignores)."""
    planned = run_outputs_planned_by_snakemake(project)
    assert planned == {e: {f"results/{e}/{r}/{name}" for r in RUNS for name in ("model.pt", "metrics.json")}
                       for e in EXPERIMENTS}
    # DVC tracks the experiment's directory
    assert run_outputs_planned_by_dvc(project) == {
        e: {str(Path(path).parent.parent) for path in outputs} for e, outputs in planned.items()}


def test_deleted_intermediate_outputs_are_made_again(project: Path, tmp_path: Path) -> None:
    copy = copy_of(project, tmp_path)
    run_dir = copy / "results/mlp/r1-fold0-seed0"
    for name in ("history.csv", "perf.json"):  # timings: by-products, as after a dvc pull
        (run_dir / name).unlink()
    assert planned_jobs(copy) == {}
    (run_dir / "model.pt").unlink()
    assert planned_runs(copy) == ["mlp"]  # the job that writes it, and what depends on it
    assert planned_jobs(copy) == {"run": 1, "aggregate_experiment": 1, "aggregate": 1, "report": 1, "all": 1}


def test_a_forced_rerun_is_bit_identical(project: Path, tmp_path: Path) -> None:
    copy = copy_of(project, tmp_path)
    model = copy / "results/lenet_relu/r1-fold0-seed0/model.pt"
    before = model.stat().st_mtime_ns
    run(["snakemake", "--cores", "1", "--force", str(model.relative_to(copy))], copy)
    assert model.stat().st_mtime_ns > before  # trained again
    run(["snakemake", "--cores", "2", "--resources", "gpu=1"], copy)  # bring the rest up to date
    assert run_files(copy) == run_files(project)


def test_dvc_repro_reproduces_snakemake_and_snakemake_stays_idle(
    project: Path, finished: Path, tmp_path: Path
) -> None:
    """``finished`` is a copy of ``project`` in which ``dvc repro`` ran every stage."""
    before = run_files(project)
    assert run_files(finished) == before  # same commands, same files
    out = run(["snakemake", "--cores", "1", "--dry-run"], finished).stdout
    assert "Nothing to be done" in out
    # DVC's cache is a copy: outputs stay plain, writable, single-linked files. (Hardlinks are
    # write-protected, and Snakemake refuses to rerun a job whose outputs a non-root user cannot
    # write: ProtectedOutputException.)
    outputs = [path for top in ("data", "results", "reports") for path in (finished / top).rglob("*")
               if path.is_file()]
    assert outputs and all(p.stat().st_mode & stat.S_IWUSR and p.stat().st_nlink == 1 for p in outputs)
    # A file DVC restores is a new copy (a new mtime) of the same bytes. Snakemake reruns what
    # depends on it unless it recorded the file's checksum (only for files under 1 MB) and finds it
    # unchanged; `--touch` marks those jobs current. No training reruns: model.pt has nothing
    # downstream, and its job's inputs are older than it.
    copy = copy_of(finished, tmp_path)
    (copy / "results/mlp/r0-fold1-seed0/model.pt").unlink()
    (copy / "results/mlp/r0-fold1-seed0/metrics.json").unlink()
    run(["dvc", "checkout"], copy)
    assert run_files(copy) == before
    assert "up to date" in run(["dvc", "status"], copy).stdout
    assert set(planned_jobs(copy)) <= {"aggregate_experiment", "aggregate", "report", "all"}
    run(["snakemake", "--cores", "1", "--touch"], copy)
    assert planned_jobs(copy) == {}
    assert run_files(copy) == before
    # a killed job's scratch files in a finished results directory change nothing downstream
    for path in (copy / "results/mlp/r0-fold0-seed0/checkpoint.pt",
                 copy / "results/mlp/r0-fold0-seed0/.metrics.json.99999999.0badc0de.tmp"):
        path.write_bytes(b"left by a kill")
    assert "up to date" in run(["dvc", "status"], copy).stdout


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the engines as another, normal user")
def test_a_normal_user_reruns_snakemake_over_the_files_dvc_placed(
    finished: Path, request: pytest.FixtureRequest
) -> None:
    """The engines coexist for a user who is not root: after `dvc repro`, Snakemake overwrites the
    outputs DVC placed. (With DVC's default hardlink cache they are read-only links into the cache,
    and Snakemake stops with ProtectedOutputException; root's writes pass any mode, so this runs as
    ``nobody``. CAP_DAC_READ_SEARCH only lets it read the interpreter and tests under root's 0700
    directories: every write is checked as for any normal user.) The project lies in a directory of
    its own under /tmp, as a user's would: git does not find a repository below root's 0700
    pytest directories, and the results record the code version git gives."""
    base = Path(tempfile.mkdtemp(prefix="convbench-nobody-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    copy = shutil.copytree(finished, base / "copy", symlinks=True)
    home = base / "home"
    home.mkdir()
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "env",
                 f"HOME={home}", f"DVC_SITE_CACHE_DIR={home}/dvc", f"XDG_CACHE_HOME={home}/.cache"]
    probe = run([*as_nobody, "python", "-c", "import os; print(os.geteuid(), os.access('/etc/passwd', os.W_OK))"],
                copy)
    assert probe.stdout.split() == [str(NOBODY), "False"]  # really a normal user
    (copy / "results/mlp/r0-fold1-seed0/model.pt").unlink()
    run([*as_nobody, "dvc", "checkout"], copy)  # DVC restores it, as this user
    metrics = copy / "results/mlp/r0-fold1-seed0/metrics.json"  # placed by DVC
    placed = metrics.stat().st_mtime_ns
    for args in (["--force", str(metrics.relative_to(copy))], []):  # rerun mlp, then all downstream
        proc = run([*as_nobody, "snakemake", "--cores", "1", *args], copy, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert metrics.stat().st_mtime_ns > placed  # written again, by this user
    assert planned_jobs(copy) == {}
    assert run_files(copy) == run_files(finished)


def test_snakemake_and_dvc_refuse_to_run_at_once(project: Path, tmp_path: Path) -> None:
    """Both hold DVC's repository lock while they run: the second one started is refused."""
    copy = copy_of(project, tmp_path)  # a refusal that failed would run the study here only
    holder = subprocess.Popen(  # a DVC process holding its lock, as `dvc repro` does while it runs
        [sys.executable, "-c", "import sys, time; from dvc.lock import make_lock; "
         "lock = make_lock('.dvc/tmp/lock'); lock.lock(); print('locked', flush=True); time.sleep(60)"],
        cwd=copy, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run(["snakemake", "--cores", "1", "--forcerun", "report"], copy, check=False)
        assert proc.returncode != 0
        assert "DVC is running in this project (it holds .dvc/tmp/lock)" in proc.stdout + proc.stderr
    finally:
        holder.kill()
        holder.wait()
    from convbench._io import hold_dvc_lock  # and the other way round: Snakemake's onstart hook

    code = ("import sys; sys.path.insert(0, 'src'); from convbench._io import hold_dvc_lock; "
            "hold_dvc_lock(); print('locked', flush=True); import time; time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=copy, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run(["dvc", "repro"], copy, check=False)
        assert proc.returncode != 0 and "Unable to acquire lock" in proc.stdout + proc.stderr
    finally:
        holder.kill()
        holder.wait()
    assert hold_dvc_lock(copy / "results") is False  # no DVC project there: nothing to hold


# ------------------------------------------------------------------------- code-aware reruns


@pytest.fixture(scope="module")
def finished(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project once both engines have run it (``dvc repro`` after Snakemake: dvc.lock
    written). Read only: a test that changes it works on ``copy_of`` or ``edited_copy``."""
    finished = shutil.copytree(project, tmp_path_factory.mktemp("finished") / "project", symlinks=True)
    run(["dvc", "repro"], finished)
    assert dvc_changed_stages(finished) == set()
    assert planned_jobs(finished) == {}
    return finished


def edited_copy(finished: Path, tmp_path: Path, path: str) -> Path:
    """A copy of the finished study (mtimes kept) with a comment appended to one source file."""
    copy = copy_of(finished, tmp_path)
    with open(copy / path, "a") as file:
        file.write("# an edit\n")
    return copy


def test_a_network_edit_reruns_only_the_experiments_that_use_it(finished: Path, tmp_path: Path) -> None:
    """Both engines plan exactly mlp's runs and what depends on them; the results then name the
    code that made them: each network's training code (the files `convbench run` executes for it),
    and the study card lists the versions with their runs."""
    import hashlib

    head = run(["git", "rev-parse", "HEAD"], finished).stdout.strip()
    card = json.loads((finished / "results/study.json").read_text())["study"]
    versions = {v["code_version"]["scope"]: v for v in card["code_versions"]}
    assert sorted(versions) == ["convbench run, network lenet", "convbench run, network mlp"]
    for version in versions.values():
        assert version["runs"] == len(RUNS)
        assert version["code_version"]["source_commit"] == head and version["code_version"]["dirty"] is False
    mlp_file = finished / "src/convbench/models/mlp.py"
    assert versions["convbench run, network mlp"]["code_version"]["files"]["models/mlp.py"] == \
        hashlib.sha256(mlp_file.read_bytes()).hexdigest()
    assert "models/mlp.py" not in versions["convbench run, network lenet"]["code_version"]["files"]

    copy = edited_copy(finished, tmp_path, "src/convbench/models/mlp.py")
    assert planned_runs(copy) == ["mlp"]
    assert planned_jobs(copy) == {"run": 1, "aggregate_experiment": 1, "aggregate": 1, "report": 1, "all": 1}
    assert dvc_changed_stages(copy) == {"run@mlp"}
    assert dvc_repro_runs(copy) == ["run@mlp", "aggregate_experiment@mlp", "aggregate", "report"]

    card = json.loads((copy / "results/study.json").read_text())["study"]
    edited = {v["code_version"]["scope"]: v for v in card["code_versions"]}
    assert edited["convbench run, network mlp"]["code_version"]["dirty"] is True
    assert edited["convbench run, network mlp"]["code_version"]["files"]["models/mlp.py"] == \
        hashlib.sha256((copy / "src/convbench/models/mlp.py").read_bytes()).hexdigest()
    assert edited["convbench run, network lenet"] == versions["convbench run, network lenet"]  # not retrained
    page = (copy / "reports/report.html").read_text(encoding="utf-8")
    assert f"git {head[:12]} with uncommitted changes" in page


def test_a_queued_sweep_runs_and_records_the_code_of_its_own_experiment(finished: Path, tmp_path: Path) -> None:
    """`dvc exp run --queue` with a Hydra sweep, then `dvc queue start`: each experiment runs in a
    copy of the repository under .dvc/tmp/exps, with the code it was queued with (here an edited
    network file that the workspace no longer has), and records that code, not the workspace's."""
    import hashlib
    import time

    project = copy_of(finished, tmp_path)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline results"], project)
    with open(project / "src/convbench/models/mlp.py", "a") as file:
        file.write("# queued with this edit\n")
    queued_code = hashlib.sha256((project / "src/convbench/models/mlp.py").read_bytes()).hexdigest()
    run(["dvc", "exp", "run", "--queue", "-S", "recipe.lr=0.05,0.1"], project)
    run(["git", "checkout", "--", "src/convbench/models/mlp.py"], project)  # the workspace moves on
    workspace_code = hashlib.sha256((project / "src/convbench/models/mlp.py").read_bytes()).hexdigest()
    assert workspace_code != queued_code
    run(["dvc", "queue", "start", "--jobs", "1"], project)
    deadline = time.monotonic() + 900
    while re.search(r"\b(Queued|Running)\b", status := run(["dvc", "queue", "status"], project).stdout):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status

    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = {rev["name"]: rev["data"] for baseline in shown for exp in baseline.get("experiments") or []
                   for rev in exp["revs"]}
    assert sorted(data["params"]["params.yaml"]["data"]["recipe"]["lr"] for data in experiments.values()) == [0.05, 0.1]
    for name, data in experiments.items():
        results = data["metrics"]["results/scores.json"]["data"]["experiments"]
        assert set(results) == set(EXPERIMENTS) and 0 < results["mlp"]["val_acc_mean"] <= 1, name
        run(["dvc", "exp", "apply", name], project)
        for r in RUNS:
            version = json.loads((project / f"results/mlp/{r}/metrics.json").read_text())["code_version"]
            assert version["files"]["models/mlp.py"] == queued_code, (name, r)
            assert version["dirty"] is True
        run(["git", "checkout", "--", "."], project)


def test_dvc_plots_of_a_study_snakemake_ran_load_without_errors(project: Path, tmp_path: Path) -> None:
    """Snakemake's results recorded by `dvc commit`: the curves directories hold only the curves
    (no marker file of Snakemake's, which DVC would try to plot)."""
    copy = copy_of(project, tmp_path)
    run(["dvc", "commit", "-f", "-q"], copy)
    assert sorted(p.name for p in (copy / "results/_curves/mlp").iterdir()) == [f"{name}.csv" for name in RUNS]
    shown = json.loads(run(["dvc", "plots", "show", "--json"], copy).stdout)
    assert not shown.get("errors"), shown.get("errors")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["experiments"]["mlp"].update(knobs={"shortcut": False}),
         "experiments.mlp.knobs: network 'mlp' does not accept knob(s) shortcut"),
        (lambda s: s["experiments"]["lenet_relu"]["knobs"].update(activation="tanhh"),
         "experiments.lenet_relu.knobs: activation must be one of"),
        (("lr: 0.05", "lr: 1e-3"),  # params.yaml edited by hand: YAML 1.1 reads 1e-3 as text
         "recipe.lr: must be a number, got the text '1e-3'"),
    ],
    ids=["unknown knob", "bad knob value", "number as text"],
)
def test_bad_params_are_refused_by_name_before_any_job(tmp_path: Path, change, message: str) -> None:
    bad = yaml.safe_load(yaml.safe_dump(TINY_STUDY))
    if callable(change):
        change(bad)
    project = make_project(tmp_path / "bad", bad)
    if not callable(change):
        params = project / "params.yaml"
        assert change[0] in params.read_text()
        params.write_text(params.read_text().replace(*change))
    study = run(["convbench", "study"], project, check=False)
    assert study.returncode == 1 and message in study.stderr
    proc = run(["snakemake", "--cores", "1"], project, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr  # the same words as `convbench study`
    assert not (project / "data").exists()
    # DVC has no parse-time hook: its first stage, check, refuses the study before any other runs
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert "Running stage 'check'" in proc.stdout and "Running stage 'download'" not in proc.stdout
    assert not (project / "data").exists()
    assert not [p for p in (project / "results").rglob("*") if p.is_file()] if (project / "results").exists() else True


def test_snakemake_report_renders(project: Path, tmp_path: Path) -> None:
    """`snakemake --report report.zip`: the workflow's description, the study's results, the HTML
    report and every figure, each with its caption."""
    import zipfile

    from convbench.study import REPORT_FIGURES

    archive = tmp_path / "report.zip"
    run(["snakemake", "--cores", "1", "--report", str(archive)], project)
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        text = "\n".join(zipped.read(name).decode("utf-8", "replace") for name in names
                         if name.endswith((".html", ".js", ".json")))
        # Snakemake's own page is report/report.html; the files it includes are under report/data/
        stored = {Path(name).name: zipped.read(name) for name in names if "/data/" in name}
    assert "report/report.html" in names
    for name in REPORT_FIGURES:
        assert stored[f"{name}.png"] == (project / f"reports/figures/{name}.png").read_bytes(), names
        caption = (ROOT / f"workflow/report/figures/{name}.rst").read_text().split(";")[0].split(",")[0]
        assert caption.strip() in text, name
    assert stored["study.json"] == (project / "results/study.json").read_bytes()
    assert stored["report.html"] == (project / "reports/report.html").read_bytes()
    assert "modern CNNs" in text and ">tiny</tt>" in text  # the workflow's description, of this study
    assert "system-message" not in text  # every .rst rendered without an error


# ------------------------------------------------------------------------------------ smoke runs


def tree_bytes(project: Path, *tops: str) -> dict[str, bytes]:
    """Every file under ``tops`` (relative paths), with its bytes; logs/tiny-smoke/ (the smoke
    run's own logs) left out."""
    return {str(path.relative_to(project)): path.read_bytes()
            for top in tops for path in sorted((project / top).rglob("*"))
            if path.is_file() and not str(path.relative_to(project)).startswith("logs/tiny-smoke/")}


def test_a_smoke_run_in_both_engines_leaves_the_real_results_byte_for_byte(
    finished: Path, tmp_path: Path
) -> None:
    """`snakemake --config smoke=1` and `dvc exp run -S smoke=1` in the directory of a finished
    real study: the smoke run writes only its own -smoke directories and logs; every real result,
    report and log keeps its bytes, and neither engine then finds the real study out of date."""
    from convbench.study import load_study

    copy = copy_of(finished, tmp_path)
    real = tree_bytes(copy, "results", "reports", "logs", "data")
    run(["snakemake", "--cores", "2", "--config", "smoke=1"], copy)
    smoke = load_study(copy / "params.yaml", smoke=1)
    assert (smoke.results_dir, smoke.reports_dir) == ("results-smoke", "reports-smoke")
    page = (copy / "reports-smoke/report.html").read_text(encoding="utf-8")
    assert "SMOKE RUN: these numbers mean nothing" in page
    assert (copy / "logs/tiny-smoke/benchmark/run/mlp.tsv").exists()
    for exp in EXPERIMENTS:
        metrics = json.loads((copy / f"results-smoke/{exp}/r0-fold0-seed0/metrics.json").read_text())
        assert metrics["recipe"]["smoke"] == 1 and metrics["epochs"] == SMOKE_EPOCHS
    assert tree_bytes(copy, "results", "reports", "logs", "data") == real
    assert "Nothing to be done" in run(["snakemake", "--cores", "1", "--dry-run"], copy).stdout
    # DVC: the same switch, the same directories (its paths append smoke_suffix)
    smoke_files = tree_bytes(copy, "results-smoke")
    run(["dvc", "exp", "run", "-S", "smoke=1"], copy)
    assert yaml.safe_load((copy / "params.yaml").read_text())["smoke"] == 1
    def outputs(files: dict[str, bytes]) -> set[str]:  # less the engines' own .gitignore and timestamps
        return {path for path in files if not Path(path).name.startswith(".")}

    assert outputs(tree_bytes(copy, "results-smoke")) == outputs(smoke_files)
    # (DVC's checkout at the start of `dvc exp run` drops Snakemake's .snakemake_timestamp from the
    # directory output it restores: an engine's own file, not a result)
    assert outputs(tree_bytes(copy, "results", "reports", "logs", "data")) == outputs(real)
    assert {p: d for p, d in tree_bytes(copy, "results", "reports", "logs", "data").items() if p in outputs(real)} == {
        p: d for p, d in real.items() if p in outputs(real)}
    # back to the real study: DVC finds it as it left it. It checks the real results out of its
    # cache, which never held a run's timing by-products (history.csv, perf.json: .dvcignore)
    run(["dvc", "exp", "run", "-S", "smoke=0"], copy)
    # (nor Snakemake's own .snakemake_timestamp in a directory output, which its run recorded)
    def tracked(files: dict[str, bytes]) -> dict[str, bytes]:
        return {path: data for path, data in files.items()
                if Path(path).name not in ("history.csv", "perf.json") and not Path(path).name.startswith(".")}

    assert tracked(tree_bytes(copy, "results", "reports", "logs", "data")) == tracked(real)
    assert dvc_changed_stages(copy) == set()


def test_a_smoke_run_refuses_to_pass_for_the_real_study(finished: Path, tmp_path: Path) -> None:
    """Smoke results copied where the real study's go are refused by aggregation and the report,
    naming the recorded smoke setting: a smoke run can never be reported as a real one."""
    copy = copy_of(finished, tmp_path)
    run(["snakemake", "--cores", "2", "--config", "smoke=1", "--until", "run"], copy)
    shutil.rmtree(copy / "results/mlp")
    shutil.copytree(copy / "results-smoke/mlp", copy / "results/mlp")
    proc = run(["convbench", "aggregate", "--study", "params.yaml", "--experiment", "mlp",
                "--out", "results/_experiments/mlp.json"], copy, check=False)
    assert proc.returncode == 1
    assert ("results/mlp/r0-fold0-seed0/metrics.json: recipe.smoke is 1, but the study params.yaml asks "
            "for <not recorded> (and 1 more setting(s)): a smoke run's result, whose numbers mean nothing") \
        in proc.stderr


SEEDS_STUDY_SMOKE = 1  # batches per epoch: one step of AlexNet at 224 px, batch 128, is seconds on 2 cores


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
                    reason="the real Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
def test_the_seeds_study_runs_as_a_smoke_run_through_snakemake(tmp_path: Path) -> None:
    """README's acceptance command on the real Fashion-MNIST: all 16 experiments of
    fashion_mnist_d2l at d2l's resolution and batch size, 2 folds, to a marked report."""
    from convbench.study import load_study

    project = make_project(tmp_path / "project", TINY_STUDY)
    shutil.copy(ROOT / "conf/study/fashion_mnist_d2l.yaml", project / "conf/study/")
    run(["snakemake", "--cores", "2", "--config", "study=fashion_mnist_d2l",
         f"smoke={SEEDS_STUDY_SMOKE}"], project)
    study = load_study(project / "params.yaml", "fashion_mnist_d2l", smoke=SEEDS_STUDY_SMOKE)
    assert study.results_dir == "results/fashion_mnist_d2l-smoke" and len(study.experiments) == 16
    for name, run_ in study.all_runs():
        metrics = json.loads((project / study.run_dir(name, run_) / "metrics.json").read_text())
        assert metrics["input_size"] == study.experiment(name).input_size
        assert metrics["recipe"]["smoke"] == SEEDS_STUDY_SMOKE
    assert {run_.fold for _, run_ in study.all_runs()} == {0, 1}
    for name in study.experiments:  # every run stopped after its first epoch and resumed
        log = (project / f"logs/fashion_mnist_d2l-smoke/run/{name}.log").read_text()
        assert log.count("smoke run stopped after epoch 1; resuming from") == len(study.runs(name)), log
    assert (project / "data/splits/fashion_mnist-k5-s0/repeat0.json").exists()  # the study's own split
    page = (project / "reports/fashion_mnist_d2l-smoke/report.html").read_text(encoding="utf-8")
    body = page[page.index("<body"):]
    assert body.index("SMOKE RUN: these numbers mean nothing") < body.index("<h1")
    assert "alexnet" in page and "densenet" in page
    assert not (project / "results/fashion_mnist_d2l").exists()
    assert not (project / "reports/fashion_mnist_d2l").exists()


def test_experiments_with_their_own_seeds_run_in_both_engines(tmp_path: Path) -> None:
    """An ablation's pair trains seeds [0, 1] and another experiment the study's seed: Snakemake
    declares one rule per set of seeds (`run` and `run_seeds_0_1`), every run is trained once, the
    report counts a fold's seeds, and DVC then finds the study Snakemake recorded up to date."""
    study = {**TINY_STUDY, "recipe": {**TINY_STUDY["recipe"], "epochs": 1},
             "experiments": {name: {**raw, "seeds": [0, 1]} for name, raw in TINY_STUDY["experiments"].items()}}
    study["experiments"]["mlp_narrow"] = {"arch": "mlp", "input_size": 8, "knobs": {"width": 0.5}}
    project = make_project(tmp_path / "project", study)
    proc = run(["snakemake", "--cores", "2", "--resources", "gpu=1"], project)
    out = proc.stdout + proc.stderr
    stats = out[out.index("Job stats:"):]
    assert re.search(r"^run_seeds_0_1\s+2$", stats, re.M) and re.search(r"^run\s+1$", stats, re.M), stats
    assert re.search(r"^aggregate_experiment_seeds_0_1\s+2$", stats, re.M), stats
    for name, seeds in (("mlp", (0, 1)), ("lenet_relu", (0, 1)), ("mlp_narrow", (0,))):
        trained = sorted(p.parent.name for p in (project / "results" / name).glob("*/model.pt"))
        assert trained == sorted(f"r{r}-fold{k}-seed{s}" for r in range(REPEATS) for k in range(FOLDS)
                                 for s in seeds), (name, trained)
        curves = sorted(p.stem for p in (project / "results/_curves" / name).glob("*.csv"))
        assert curves == trained
    ablation = json.loads((project / "results/ablations.json").read_text())["ablations"]["convolutions"]
    assert len(ablation["val_acc"]["differences"]) == REPEATS * FOLDS  # a fold's two seeds averaged first
    page = (project / "reports/report.html").read_text(encoding="utf-8")
    assert "training seed 0; lenet_relu, mlp with seeds 0, 1" in page
    assert f"({REPEATS * FOLDS} folds, each the mean of 2 seeds)" in page  # the findings' line
    assert "Nothing to be done" in run(["snakemake", "--cores", "1", "--dry-run"], project).stdout
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."
