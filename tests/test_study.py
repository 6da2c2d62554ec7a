"""Study validation: every bad value is refused with its key before any job runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from convbench.cli import main as cli
from convbench.plan import plan
from convbench.study import SMOKE_EPOCHS, StudyError, load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_config() -> dict:
    with open(ROOT / "params.yaml") as file:
        return yaml.safe_load(file)


# What conf/config.yaml adds to every composed study: the smoke switch and dvc.yaml's path suffix.
SMOKE_KEYS = {"smoke": 0, "_smoke_suffixes": {"0": ""}, "smoke_suffix": "", "images": None}  # conf/config.yaml's own


def compose(tmp_path: Path, *overrides: str) -> dict:
    """params.yaml as `dvc exp run -S ...` composes it from conf/ with Hydra."""
    from dvc.utils.hydra import compose_and_dump

    params = tmp_path / "composed.yaml"
    compose_and_dump(str(params), str(ROOT / "conf"), None, "config", str(tmp_path), list(overrides))
    return yaml.safe_load(params.read_text())


def test_params_yaml_is_the_composed_default_study(default_config: dict, tmp_path: Path) -> None:
    """params.yaml is what DVC's Hydra composition writes from conf/: the two never drift."""
    with open(ROOT / "conf/study/digits.yaml") as file:
        assert {**SMOKE_KEYS, **yaml.safe_load(file)} == default_config
    assert compose(tmp_path) == default_config


def test_the_default_study_covers_every_family_with_ablations(default_config: dict) -> None:
    study = parse_study(default_config)
    archs = {e.arch for e in study.experiments.values()}
    for family in ("lenet", "alexnet", "vgg11", "nin", "googlenet", "lenet_bn", "resnet18", "densenet"):
        assert family in archs
    assert study.dataset == "digits" and study.folds >= 3
    assert len(study.ablations) >= 3
    assert study.results_dir == "results"


@pytest.mark.parametrize("name", ["digits", "fashion_mnist_d2l", "fashion_mnist_cpu"])
def test_bundled_studies_are_valid(name: str) -> None:
    study = load_study(ROOT / "params.yaml", name)
    assert study.name == name
    assert len(plan(study)["models"]) == study.folds * study.repeats * sum(
        len(e.seeds) for e in study.experiments.values())
    with open(ROOT / "conf/study" / f"{name}.yaml") as file:
        written = yaml.safe_load(file)
    assert {"repeats", "seeds"} <= set(written), "dvc.yaml tracks both as params: write them out"


def test_runs_cover_repeats_folds_and_seeds_in_a_stable_layout(default_config: dict) -> None:
    study = parse_study({**default_config, "repeats": 2, "seed": 5, "seeds": [0, 7]})
    runs = study.runs("alexnet")  # an experiment that trains the study's seeds
    assert len(runs) == 2 * study.folds * 2
    assert [r.name for r in runs[:3]] == ["r0-fold0-seed0", "r0-fold0-seed7", "r0-fold1-seed0"]
    assert study.run_dir("alexnet", runs[-1]) == f"results/alexnet/r1-fold{study.folds - 1}-seed7"
    # repeat r shuffles with seed + r; its seeds are offset so no two repeats share an initialization
    assert [study.split_seed(r) for r in (0, 1)] == [5, 6]
    assert study.split_path(1) == f"data/splits/digits-k{study.folds}-s5/repeat1.json"
    assert [r.train_seed for r in runs if r.fold == 0] == [0, 7, 1000, 1007]
    with pytest.raises(StudyError, match=r"seed 3 is not in experiment 'alexnet', which has seeds 0, 7"):
        study.run("alexnet", 0, 0, 3)
    # the default: one repeat, the study seed as the one training seed, as before repeats existed
    plain = parse_study(default_config)
    assert [(r.repeat, r.fold, r.seed, r.train_seed) for r in plain.runs("alexnet")] == [(0, k, 0, 0) for k in range(plain.folds)]


def test_an_experiment_may_train_its_own_seeds_and_an_ablation_the_same_on_both_sides() -> None:
    """Runs are spent where they are cheap: an experiment's own ``seeds`` replace the study's for
    it alone; both sides of an ablation must train the same seeds (a fold's seeds are averaged,
    then folds are paired); Snakemake declares one job shape per seed set, the study's first."""
    config = {"study": "own_seeds", "dataset": "digits", "folds": 3, "seeds": [4],
              "experiments": {"a": {"arch": "mlp", "seeds": [0, 1, 2]}, "b": {"arch": "mlp", "seeds": [0, 1, 2]},
                              "c": {"arch": "mlp"}},
              "ablations": {"pair": {"baseline": "a", "treatment": "b"}}}
    study = parse_study(config)
    assert [r.name for r in study.runs("a")[:4]] == ["r0-fold0-seed0", "r0-fold0-seed1", "r0-fold0-seed2",
                                                     "r0-fold1-seed0"]
    assert [r.name for r in study.runs("c")] == ["r0-fold0-seed4", "r0-fold1-seed4", "r0-fold2-seed4"]
    assert len(study.all_runs()) == 9 + 9 + 3
    assert study.seed_groups() == {(4,): ["c"], (0, 1, 2): ["a", "b"]}
    assert plan(study)["experiments"]["a"]["seeds"] == [0, 1, 2]
    with pytest.raises(StudyError, match=r"seed 4 is not in experiment 'a', which has seeds 0, 1, 2"):
        study.run("a", 0, 0, 4)
    unequal = {**config, "experiments": {**config["experiments"], "b": {"arch": "mlp", "seeds": [0, 1]}}}
    with pytest.raises(StudyError, match=r"ablations\.pair: its baseline a trains seeds \[0, 1, 2\] but its "
                                         r"treatment b trains \[0, 1\]"):
        parse_study(unequal)
    with pytest.raises(StudyError, match=r"experiments\.a\.seeds"):
        parse_study({**config, "experiments": {**config["experiments"], "a": {"arch": "mlp", "seeds": [1, 1]}}})


def test_the_seeds_study_is_d2l_at_d2l_settings() -> None:
    study = load_study(ROOT / "params.yaml", "fashion_mnist_d2l")
    assert study.dataset == "fashion_mnist" and study.folds == 5
    assert study.results_dir != "results"  # never overwrites the default study
    alexnet = study.experiment("alexnet")
    assert (alexnet.input_size, alexnet.recipe.lr, alexnet.recipe.batch_size) == (224, 0.01, 128)
    assert alexnet.recipe.momentum == 0 and alexnet.recipe.weight_decay == 0
    assert alexnet.recipe.schedule == "constant" and alexnet.recipe.init == "xavier"
    assert study.experiment("resnet18").input_size == 96
    assert all(e.recipe.epochs == 10 for e in study.experiments.values())


def test_an_experiment_naming_a_preset_gets_the_preset_not_the_study_defaults(
    default_config: dict,
) -> None:
    config = copy.deepcopy(default_config)  # defaults: SGD lr 0.05, momentum 0.9, cosine, ...
    config["experiments"]["book"] = {"arch": "lenet", "recipe": {"preset": "d2l", "epochs": 2}}
    book = parse_study(config).experiment("book")
    assert (book.recipe.lr, book.recipe.batch_size, book.recipe.momentum) == (0.9, 256, 0.0)
    assert book.recipe.schedule == "constant" and book.recipe.epochs == 2
    assert book.input_size == 28  # d2l's resolution for LeNet


def test_the_laptop_study_is_real_fashion_mnist_at_28_px() -> None:
    study = load_study(ROOT / "params.yaml", "fashion_mnist_cpu")
    assert study.dataset == "fashion_mnist" and study.folds >= 3
    assert study.results_dir != "results"
    assert {e.input_size for e in study.experiments.values()} == {28}
    d2l = study.experiment("lenet_d2l").recipe
    assert (d2l.lr, d2l.batch_size, d2l.momentum, d2l.schedule) == (0.9, 256, 0.0, "constant")
    for ablation in study.ablations.values():  # each pair differs in one thing
        base, treat = study.experiment(ablation.baseline), study.experiment(ablation.treatment)
        differences = (base.arch != treat.arch) + (base.knobs != treat.knobs) + (base.recipe != treat.recipe)
        assert differences == 1, ablation.name


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path: Path, capsys) -> None:
    study = tmp_path / "params.yaml"
    study.write_text(
        "study: dup\ndataset: digits\nfolds: 3\nexperiments:\n"
        "  lenet: {arch: lenet}\n  mlp: {arch: mlp}\n  lenet: {arch: lenet, knobs: {activation: relu}}\n"
    )
    with pytest.raises(StudyError, match=r"duplicate key 'lenet' at lines 5 and 7"):
        load_study(study)
    assert cli(["study", str(study)]) == 1
    assert f"{study}: duplicate key 'lenet' at lines 5 and 7" in capsys.readouterr().err
    nested = tmp_path / "nested.yaml"
    nested.write_text("study: n\ndataset: digits\nfolds: 3\nrecipe:\n  lr: 0.1\n  lr: 0.2\n"
                      "experiments:\n  lenet: {arch: lenet}\n")
    with pytest.raises(StudyError, match=r"duplicate key 'lr' at lines 5 and 6"):
        load_study(nested)


def test_unknown_selection_names_the_bundled_studies() -> None:
    with pytest.raises(StudyError, match="study.*nope.*fashion_mnist_d2l"):
        load_study(ROOT / "params.yaml", "nope")


def mutate(config: dict, path: str, value) -> dict:
    config = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("experiments.lenet.arch", "lenet9", r"experiments\.lenet\.arch: unknown network 'lenet9'"),
        ("experiments.lenet.knobs", {"shortcut": False}, r"experiments\.lenet\.knobs:.*shortcut"),
        ("folds", 1, r"folds: must be >= 2, got 1"),
        ("recipe.lr", -0.1, r"recipe\.lr: must be > 0, got -0\.1"),
        ("experiments.alexnet.input_size", 32, r"experiments\.alexnet\.input_size:.*>= 65, got 32"),
        ("experiments.mlp_plain.recipe", {"epochs": 0}, r"recipe\.epochs: must be >= 1, got 0"),
        ("dataset", "cifar10", r"dataset: unknown data set .cifar10.: give images: for a folder images/cifar10/"),
        ("fold_ids", [0, 1], r"fold_ids: unknown key; known keys: ablations, dataset"),
        ("repeats", 0, r"repeats: must be >= 1, got 0"),
        # closed keys the schema used to let through (only the hand-written checks refused them)
        ("experiments.lenet.recipe", {"learning_rate": 0.1},
         r"experiments\.lenet\.recipe\.learning_rate: unknown key; known keys: "),
        ("ablations.pooling", {"baseline": "lenet", "treatment": "lenet_relu", "note": "x"},
         r"ablations\.pooling\.note: unknown key; known keys: baseline, question, treatment"),
        ("experiments.lenet.knobs", {"init": "default"},
         r"experiments\.lenet\.knobs: init is a recipe setting, not a network knob: set recipe\.init"),
        ("recipe.epochs", 10.0, r"recipe\.epochs: must be an integer, got 10\.0"),
        ("recipe.lr", float("inf"), r"experiments\.\w+: recipe\.lr: must be finite, got inf"),
        ("study", "my study", r"study: must be a name of letters, digits, '_', '-', '\.', got 'my study'"),
        ("seeds", [], r"seeds: must not be empty, got \[\]"),
        ("seeds", [1, 1], r"seeds: lists a value twice, got \[1, 1\]"),
        ("seeds", [0, -1], r"seeds\[1\]: must be >= 0, got -1"),
        ("ablations.dropout.baseline", "missing", r"ablations\.dropout\.baseline"),
        ("recipe.optimiser", "sgd", r"recipe\.optimiser: unknown key; known keys: augmentation"),
        # values that used to pass `convbench study` and fail later, inside a job, or never
        ("experiments.lenet.knobs", {"activation": "tanhh"},
         r"experiments\.lenet\.knobs: activation must be one of .*got 'tanhh'"),
        ("experiments.mlp_plain.knobs", {"dropout": 2.0},
         r"experiments\.mlp_plain\.knobs: dropout must be in \[0, 1\), got 2\.0"),
        ("experiments.resnet18.knobs", {"width": 0},
         r"experiments\.resnet18\.knobs: width must be a number > 0, got 0"),
        ("experiments.lenet_bn.knobs", {"batch_norm": "yes"},
         r"experiments\.lenet_bn\.knobs: batch_norm must be true or false, got 'yes'"),
        ("folds", 200, r"folds: 200 folds need at least 200 images of every class, but the "
                       r"smallest class of digits has 131"),
        ("recipe.batch_size", 1100, r"experiments\.lenet\.recipe\.batch_size: 1100 is larger than a "
                                    r"training fold \(1077 images of digits with 5 folds\)"),
        ("results_dir", "my results", r"results_dir: must be a path of letters, .*no spaces.*got 'my results'"),
        ("recipe.lr", "1e-3", r"recipe\.lr: must be a number, got the text '1e-3' \(YAML reads"),
        ("experiments.lenet.recipe", {"weight_decay": "5e-4"},
         r"experiments\.lenet\.recipe\.weight_decay: must be a number, got the text '5e-4'"),
    ],
)
def test_bad_values_are_refused_by_key(default_config: dict, path: str, value, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        parse_study(mutate(default_config, path, value))


def test_study_cli_names_the_bad_key(tmp_path: Path, default_config: dict, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(mutate(default_config, "recipe.lr", -1.0)))
    assert cli(["study", str(params)]) == 1
    err = capsys.readouterr().err
    assert "recipe.lr: must be > 0, got -1.0" in err and str(params) in err


def test_study_cli_lists_the_plan(capsys) -> None:
    assert cli(["study", str(ROOT / "params.yaml"), "--no-estimate"]) == 0
    out = capsys.readouterr().out
    assert "135 training runs" in out and "resnet18_plain" in out
    assert "seeds 0, 1, 2" in out  # the LeNets train their own seeds
    assert "estimated" not in out


@pytest.mark.slow  # it times real training steps, start-ups and a report kernel
def test_study_cli_estimates_each_experiments_time_and_memory_on_this_machine(
    tmp_path: Path, default_config: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured steps times the study's steps: per experiment and in total, naming the device."""
    import json

    from convbench.device import describe_cpu
    from convbench.estimate import TEST_SIZES, fold_sizes

    cpu_model = describe_cpu()["model"]

    config = {**default_config, "experiments": {k: default_config["experiments"][k] for k in ("lenet", "mlp_plain")},
              "ablations": {}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config))
    assert cli(["study", str(params), "--json", "--steps", "1"]) == 0
    estimate = json.loads(capsys.readouterr().out)["estimate"]
    assert estimate["device"] == f"cpu:{cpu_model}:1 threads"
    study = load_study(params)
    train_images, val_images = fold_sizes(study)
    assert (train_images, val_images) == (1077, 270)  # 1347 digits in 5 folds
    for name, cost in estimate["experiments"].items():
        e = study.experiment(name)
        assert cost["steps_per_epoch"] == train_images // e.recipe.batch_size == 33
        assert cost["step_s"] > 0 and cost["eval_image_s"] > 0 and cost["peak_memory_mb"] > 0
        per_run = (e.recipe.epochs * (33 * cost["step_s"] + val_images * cost["eval_image_s"])
                   + (val_images + TEST_SIZES["digits"]) * cost["eval_image_s"])
        assert cost["seconds"] == pytest.approx(len(study.runs(name)) * per_run + estimate["start_up_s"])
        assert cost["runs"] == len(study.runs(name)) == study.folds * len(e.seeds)  # lenet: 3 seeds a fold
    assert 0 < estimate["start_up_s"] < 120
    # the whole study's wall time: training, and every other job (issue 29: the total once left
    # out the split, the aggregation and the report, 12 s where the study took 49-53 s)
    training = sum(c["seconds"] for c in estimate["experiments"].values())
    others = estimate["other_jobs_seconds"]
    assert set(others) == {"check", "download and prepare", "split", "aggregate", "report"}
    assert others["aggregate"] == pytest.approx(3 * others["check"]) and others["check"] > 0  # 2 + study's
    assert others["split"] == pytest.approx(study.repeats * others["check"])
    assert others["report"] > others["check"]  # a kernel, its imports and a figure
    assert estimate["training_seconds"] == pytest.approx(training)
    assert estimate["total_seconds"] == pytest.approx(training + sum(others.values()))
    assert cli(["study", str(params), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert f"estimated cost on cpu:{cpu_model}:1 threads" in out
    assert "  lenet " in out and "  total " in out and "peak memory" in out
    assert "the other jobs: check " in out and ", report " in out


def test_dvc_study_override_composes_the_bundled_study(tmp_path: Path) -> None:
    """`dvc exp run -S study=NAME` writes params.yaml with Hydra from conf/: the same file
    Snakemake's `--config study=NAME` reads."""
    composed = compose(tmp_path, "study=fashion_mnist_d2l")
    with open(ROOT / "conf/study/fashion_mnist_d2l.yaml") as file:
        assert composed == {**SMOKE_KEYS, **yaml.safe_load(file)}
    assert parse_study(composed).name == "fashion_mnist_d2l"


@pytest.mark.parametrize("name", ["digits", "fashion_mnist_d2l", "fashion_mnist_cpu"])
def test_smoke_is_one_switch_for_both_engines_and_moves_every_path(name: str, tmp_path: Path) -> None:
    """`dvc exp run -S smoke=2` composes what `snakemake --config smoke=2` (load_study's smoke)
    loads: the same study, with results and reports in their own -smoke directories, which
    dvc.yaml's paths (results_dir + smoke_suffix) name too."""
    composed = compose(tmp_path, f"study={name}", "smoke=2")
    assert composed["smoke"] == 2 and composed["smoke_suffix"] == "-smoke"
    by_dvc = parse_study(composed)
    by_snakemake = load_study(ROOT / "params.yaml", name, smoke=2)
    real = load_study(ROOT / "params.yaml", name)
    assert by_dvc == by_snakemake
    assert by_dvc.results_dir == composed["results_dir"] + composed["smoke_suffix"] == real.results_dir + "-smoke"
    assert by_dvc.reports_dir == real.reports_dir + "-smoke"
    assert by_dvc.layout_name == f"{name}-smoke" and real.layout_name == name
    real_paths = {real.study_results_path, real.scores_path, real.ablations_path, real.reports_dir,
                  *(real.run_dir(e, run) for e, run in real.all_runs())}
    smoke_paths = {by_dvc.study_results_path, by_dvc.scores_path, by_dvc.ablations_path, by_dvc.reports_dir,
                   *(by_dvc.run_dir(e, run) for e, run in by_dvc.all_runs())}
    assert not any(s == r or s.startswith(r + "/") or r.startswith(s + "/")
                   for s in smoke_paths for r in real_paths)
    # the same data and split (the study's own K), the first two folds, the real batch sizes
    assert (by_dvc.split_path(), by_dvc.prepared_path) == (real.split_path(), real.prepared_path)
    assert {run.fold for _, run in by_dvc.all_runs()} == {0, 1} and by_dvc.folds == real.folds
    for exp_name, e in by_dvc.experiments.items():
        r = real.experiment(exp_name)
        assert (e.input_size, e.recipe.batch_size, e.recipe.precision, e.recipe.lr) == \
            (r.input_size, r.recipe.batch_size, r.recipe.precision, r.recipe.lr)
        assert e.recipe.smoke == 2 and e.recipe.epochs == SMOKE_EPOCHS == 2
        assert e.recipe.to_dict()["smoke"] == 2 and "smoke" not in r.recipe.to_dict()


def test_a_hand_edited_smoke_suffix_is_refused(default_config: dict) -> None:
    with pytest.raises(StudyError, match="smoke_suffix: is '', but smoke 2 makes it '-smoke'"):
        parse_study({**default_config, "smoke": 2})


def test_smoke_is_the_whole_studys_not_a_recipe_setting(default_config: dict) -> None:
    config = mutate(default_config, "experiments.lenet.recipe.smoke", 2)
    with pytest.raises(StudyError, match="experiments.lenet.recipe.smoke: a smoke run is the whole study's"):
        parse_study(config)


@pytest.mark.parametrize("command", [["study"], ["aggregate", "--out", "x.json"], ["split"],
                                     ["download"], ["report"]])
def test_a_study_file_that_is_not_yaml_is_one_line_naming_it(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """load_study turns YAML's own error into a StudyError naming the file: every command reports it
    alike, without listing yaml.YAMLError itself."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("study: tiny\nexperiments: [unclosed\n")
    name, *rest = command
    argv = [name, *(["params.yaml"] if name == "study" else ["--study", "params.yaml"]), *rest]
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"convbench {name}: error: params.yaml: not valid YAML: ") and err.count("\n") == 1
