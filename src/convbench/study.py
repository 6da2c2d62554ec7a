"""A study: one dataset, R x K-fold cross-validation, training seeds, recipe defaults and named
experiments.

params.yaml describes the study the pipeline runs; Snakemake reads it as its configfile and DVC
as its params. Bundled studies live in ``conf/study/<name>.yaml`` (the same format); selecting one
by name (``study=NAME``) replaces params.yaml's study in both engines. Everything is validated
here, once, before any job runs, with errors that name the key and the value.

A *run* is one model: experiment x repeat x fold x training seed. Repeat ``r`` splits the training
set with the seed ``seed + r`` (repeat 0 is the study's own split); the training seeds are the
experiment's own ``seeds``, else the study's ``seeds`` (default ``[seed]``), offset by ``1000 * r``
in repeat ``r`` so no two repeats share an initialization. An experiment trains more seeds where a
verdict needs them and a run is cheap; a fold's seeds are averaged before folds are compared, and
both sides of an ablation train the same seeds. Layout: ``results/<experiment>/r<repeat>-fold<k>-seed<s>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench import schema
from convbench.errors import DataError
from convbench.imagefolder import check_for_study
from convbench.networks import check_knobs, names, resolve_input_size
from convbench.recipe import Recipe, d2l_input_size, resolve_recipe
from convbench.user_networks import check_on_dummy_batch, load_network_files

STUDY_DIR = Path("conf/study")
# Training-set size and the smallest class's count in it, so a study is checked against its data
# before any job: K-fold needs K <= the smallest class, and a batch must fit in a training fold.
# digits: the 75% stratified train part of scikit-learn's 1,797 images (convbench.prepare);
# MNIST: its smallest class is the digit 5 (5,421 training images); Fashion-MNIST and KMNIST:
# 6,000 per class (their publishers' READMEs).
TRAIN_SIZES: dict[str, tuple[int, int]] = {
    "digits": (1347, 131),
    "mnist": (60000, 5421),
    "fashion_mnist": (60000, 6000),
    "kmnist": (60000, 6000),
}
# The report's figures, reports/<study>/figures/<name>.png (the Snakemake rule lists them as outputs).
REPORT_FIGURES = ("learning_curves", "pareto", "ablations", "fold_spread", "confusion", "misclassified")
RUN_NAME = "r{repeat}-fold{fold}-seed{seed}"  # a run's directory under results/<study>/<experiment>/
REPEAT_SEED_STRIDE = 1000  # repeat r trains seed s with torch seed s + 1000 * r
# A smoke run (`smoke: N`): every stage for real at toy scale. Each run trains N batches per epoch
# for SMOKE_EPOCHS epochs at the study's resolution, batch size, recipe and precision, stopping after
# the first epoch's checkpoint and resuming from it (convbench.train_job.SMOKE_STOP_AFTER); validation
# and test are N batches of at most SMOKE_EVAL_BATCH images; only the first SMOKE_FOLDS folds of the
# study's own split run. Its files go to results_dir and reports_dir plus SMOKE_SUFFIX.
SMOKE_EPOCHS = 2
SMOKE_FOLDS = 2
SMOKE_EVAL_BATCH = 16
SMOKE_SUFFIX = "-smoke"
# Seeds checked with the study, not when a job fails (hard-coded: the check needs no torch). torch's
# docs (torch.manual_seed): "Value must be within the inclusive range [-0x8000_0000_0000_0000,
# 0xffff_ffff_ffff_ffff]"; each epoch seeds seed * EPOCH_SEED_STRIDE + epoch (convbench.train.
# epoch_seed). StratifiedKFold's numpy RandomState takes split seeds 0 .. 2**32 - 1.
TORCH_SEED_MAX = 2**64 - 1
EPOCH_SEED_STRIDE = 1_000_003
SPLIT_SEED_MAX = 2**32 - 1


class StudyError(ValueError):
    """A study description is invalid; the message names the key and the value."""


@dataclass(frozen=True)
class Experiment:
    name: str
    arch: str
    knobs: dict[str, Any]
    input_size: int
    recipe: Recipe
    description: str = ""
    seeds: tuple[int, ...] = (0,)  # its training seeds: its own, else the study's


@dataclass(frozen=True)
class Ablation:
    name: str
    baseline: str
    treatment: str
    question: str = ""


@dataclass(frozen=True, order=True)
class Run:
    """One model of an experiment: which repeat of the K-fold split, which fold, which seed."""

    repeat: int
    fold: int
    seed: int  # an entry of the experiment's `seeds`

    @property
    def name(self) -> str:
        return RUN_NAME.format(repeat=self.repeat, fold=self.fold, seed=self.seed)

    @property
    def train_seed(self) -> int:
        """The torch seed of this run: ``seed`` in repeat 0, offset by 1000 per repeat."""
        return self.seed + REPEAT_SEED_STRIDE * self.repeat


@dataclass(frozen=True)
class Study:
    name: str
    dataset: str
    folds: int
    seed: int
    threads: int
    results_dir: str
    reports_dir: str
    experiments: dict[str, Experiment]
    ablations: dict[str, Ablation] = field(default_factory=dict)
    mirror: str | None = None
    description: str = ""
    repeats: int = 1
    seeds: tuple[int, ...] = ()  # the default of every experiment's; empty: (seed,)
    smoke: int = 0  # N > 0: a smoke run, N batches per epoch (SMOKE_EPOCHS, SMOKE_FOLDS)
    device: str = "auto"  # where jobs run unless --device says otherwise (convbench.device)
    networks: tuple[str, ...] = ()  # files of the project that define networks (convbench.user_networks)
    images: dict[str, Any] | None = None  # a folder of images/<dataset>/ and how to prepare it (convbench.imagefolder)

    def __post_init__(self) -> None:
        if not self.seeds:
            object.__setattr__(self, "seeds", (self.seed,))

    def experiment(self, name: str) -> Experiment:
        try:
            return self.experiments[name]
        except KeyError:
            raise StudyError(
                f"experiments: no experiment {name!r} in study {self.name!r}; "
                f"it has: {', '.join(self.experiments)}"
            ) from None

    # Paths: the pipeline's output layout, in one place for Snakemake, DVC and the report.
    @property
    def raw_dir(self) -> str:
        return f"data/raw/{self.dataset}"

    @property
    def prepared_path(self) -> str:
        return f"data/prepared/{self.dataset}.npz"

    @property
    def splits_dir(self) -> str:
        return f"data/splits/{self.dataset}-k{self.folds}-s{self.seed}"

    def split_seed(self, repeat: int) -> int:
        """The shuffling seed of repeat ``repeat``'s K-fold split."""
        return self.seed + repeat

    def split_path(self, repeat: int = 0) -> str:
        return f"{self.splits_dir}/repeat{repeat}.json"

    @property
    def run_folds(self) -> range:
        """The folds that are trained: all K, or a smoke run's first SMOKE_FOLDS of the same split."""
        return range(min(self.folds, SMOKE_FOLDS) if self.smoke else self.folds)

    @property
    def layout_name(self) -> str:
        """The study's name where its files are kept apart (logs/<layout_name>/): a smoke run's is
        the name plus SMOKE_SUFFIX."""
        return self.name + (SMOKE_SUFFIX if self.smoke else "")

    def runs(self, experiment: str) -> list[Run]:
        """Every run of ``experiment``, repeat by repeat, fold by fold, seed by seed."""
        return self.runs_with_seeds(self.experiment(experiment).seeds)

    def runs_with_seeds(self, seeds: tuple[int, ...]) -> list[Run]:
        """The runs of an experiment that trains ``seeds``."""
        return [Run(r, k, s) for r in range(self.repeats) for k in self.run_folds for s in seeds]

    def seed_groups(self) -> dict[tuple[int, ...], list[str]]:
        """The experiments by their training seeds, the study's own first: Snakemake declares one job
        shape (the same run files) per group."""
        groups: dict[tuple[int, ...], list[str]] = {}
        for name in sorted(self.experiments, key=lambda name: self.experiments[name].seeds != self.seeds):
            groups.setdefault(self.experiments[name].seeds, []).append(name)
        return groups

    def run(self, experiment: str, repeat: int, fold: int, seed: int) -> Run:
        """The run (repeat, fold, seed) of ``experiment``, refused with the study's ranges when it
        has none such."""
        return self.select_runs(experiment, repeat, fold, seed)[0]

    def select_runs(self, experiment: str, repeat: int | None = None, fold: int | None = None,
                    seed: int | None = None) -> list[Run]:
        """The runs of ``experiment`` with the given repeat, fold and seed (None: any); a value it
        does not have is refused with the ones it has."""
        seeds = self.experiment(experiment).seeds
        for key, value, allowed in (("repeat", repeat, range(self.repeats)),
                                    ("fold", fold, self.run_folds), ("seed", seed, seeds)):
            if value is not None and value not in allowed:
                owner = f"experiment {experiment!r}" if key == "seed" else f"study {self.name!r}"
                raise StudyError(f"{key} {value} is not in {owner}, which has "
                                 f"{key}s {', '.join(map(str, allowed))}")
        return [run for run in self.runs(experiment) if repeat in (None, run.repeat)
                and fold in (None, run.fold) and seed in (None, run.seed)]

    def run_dir(self, experiment: str, run: Run) -> str:
        return f"{self.results_dir}/{experiment}/{run.name}"

    def experiment_results_path(self, experiment: str) -> str:
        """``convbench aggregate --experiment``'s file: one experiment's means and spreads over its
        runs. Outside every run directory, so DVC can depend on ``results/<experiment>`` (a directory)
        and the study step on ``results/_experiments``; "_" never starts an experiment name."""
        return f"{self.results_dir}/_experiments/{experiment}.json"

    def curves_dir(self, experiment: str) -> str:
        """``convbench aggregate --experiment``'s learning curves: one CSV per run, each epoch's
        losses and accuracies without the timings, so DVC can plot them (``dvc plots``)."""
        return f"{self.results_dir}/_curves/{experiment}"

    @property
    def timings_dir(self) -> str:
        """Each scored model's perf.json, named by the model's sha256: a run's own perf.json is a
        by-product DVC neither tracks nor restores, so after a checkout the report finds the
        timings of the very model it reports here (.dvcignore'd, as perf.json is)."""
        return f"{self.results_dir}/_timings"

    @property
    def stamp_path(self) -> str:
        """Written by ``convbench study --stamp`` once the study is valid: the first stage of both
        engines, on which DVC's every other stage depends (so nothing is deleted for a bad study)."""
        return f"{self.results_dir}/_study_checked.txt"

    @property
    def study_results_path(self) -> str:
        """``convbench aggregate``'s file: the study card and every experiment's results."""
        return f"{self.results_dir}/study.json"

    @property
    def scores_path(self) -> str:
        """The study step's DVC metrics: each experiment's accuracies (mean, std), params and MACs,
        and nothing that differs between two bit-identical runs (no hash, version or timing)."""
        return f"{self.results_dir}/scores.json"

    @property
    def ablations_path(self) -> str:
        """The study step's ablation results: per ablation and accuracy, the paired comparison and
        its verdict (a DVC metric, so ``dvc metrics diff`` shows a verdict that changed)."""
        return f"{self.results_dir}/ablations.json"

    def all_runs(self) -> list[tuple[str, Run]]:
        """Every (experiment, run) of the study: each one network trained once."""
        return [(name, run) for name in self.experiments for run in self.runs(name)]


def _fail(key: str, problem: str) -> StudyError:
    return StudyError(f"{key}: {problem}")


def parse_study(config: dict[str, Any]) -> Study:
    """Validate a study description (a dict, as loaded from YAML) into a Study: first against the
    schema (keys, types, ranges), then what only the code knows (networks, knobs, the data)."""
    try:
        schema.validate(config)
    except schema.SchemaError as err:
        raise StudyError(str(err)) from None
    name = config["study"]
    dataset = config["dataset"]
    try:  # a network of the project's own can only be known by importing its file (torch with it)
        project = load_network_files(config.get("networks") or [])
    except ValueError as err:
        raise _fail("networks", str(err)) from None
    folds = config["folds"]
    repeats = config.get("repeats", 1)
    images = config.get("images")
    if (dataset in TRAIN_SIZES) == bool(images):  # a built-in data set, or a folder of images/<dataset>/
        raise _fail("images" if images else "dataset", f"{dataset!r} is a built-in data set: drop images:" if images
                    else f"unknown data set {dataset!r}: give images: for a folder images/{dataset}/, or one "
                    f"of {', '.join(TRAIN_SIZES)}")
    try:
        n_train, smallest_class, in_channels, num_classes = (
            check_for_study(dataset, images, folds) if images else (*TRAIN_SIZES[dataset], 1, 10))
    except (ValueError, DataError) as err:
        raise _fail("images", str(err)) from None
    if folds > smallest_class:
        raise _fail("folds", f"{folds} folds need at least {folds} images of every class, but "
                             f"the smallest class of {dataset} has {smallest_class}")
    seed = config.get("seed", 0)
    seeds = tuple(config.get("seeds") or (seed,))
    smoke = config.get("smoke") or 0
    suffix = SMOKE_SUFFIX if smoke else ""
    if config.get("smoke_suffix", suffix) != suffix:
        raise _fail("smoke_suffix", f"is {config['smoke_suffix']!r}, but smoke {smoke} makes it {suffix!r}: "
                    "it is written by DVC's Hydra composition (conf/config.yaml); compose params.yaml "
                    "again (dvc exp run -S smoke=N) instead of editing it")
    threads = config.get("threads", 1)
    defaults = config.get("recipe") or {}
    known = names()
    by_folded_name: dict[str, str] = {}
    for exp_name in config["experiments"]:
        other = by_folded_name.setdefault(exp_name.casefold(), exp_name)
        if other != exp_name:
            raise _fail(f"experiments.{exp_name}", f"differs from experiments.{other} only in case: both "
                        "would be one directory on macOS and Windows file systems; rename one")
    experiments: dict[str, Experiment] = {}
    for exp_name, raw in config["experiments"].items():
        key = f"experiments.{exp_name}"
        arch = raw["arch"]
        if arch not in known:
            raise _fail(f"{key}.arch", f"unknown network {arch!r}; known networks: {', '.join(known)}")
        knobs = raw.get("knobs") or {}
        try:
            check_knobs(arch, knobs)
        except ValueError as err:
            raise _fail(f"{key}.knobs", str(err)) from None
        own = raw.get("recipe") or {}
        if "smoke" in own or "smoke" in defaults:
            where = f"{key}.recipe.smoke" if "smoke" in own else "recipe.smoke"
            raise _fail(where, "a smoke run is the whole study's: write smoke: N at the top of the study "
                        "(or snakemake --config smoke=N, dvc exp run -S smoke=N)")
        # An experiment that names a preset gets that preset's recipe (plus its own keys), not the
        # study's defaults: `preset: d2l` next to a modern default recipe means d2l's recipe.
        settings = dict(own) if "preset" in own else {**defaults, **own}
        try:
            recipe = resolve_recipe(settings, arch)
        except ValueError as err:
            raise _fail(key, str(err)) from None
        if smoke:
            recipe = smoke_recipe(recipe, smoke)
        size = raw.get("input_size")
        if size is None and settings.get("preset") == "d2l":
            size = d2l_input_size(arch)
        try:
            size = resolve_input_size(arch, size, knobs)
        except ValueError as err:
            raise _fail(f"{key}.input_size", str(err)) from None
        fold_size = n_train - -(-n_train // folds)  # the smallest training fold (K-1 of K folds)
        if recipe.batch_size > fold_size:
            raise _fail(f"{key}.recipe.batch_size", f"{recipe.batch_size} is larger than a training "
                        f"fold ({fold_size} images of {dataset} with {folds} folds): every epoch "
                        "would be one partial batch")
        experiments[exp_name] = Experiment(
            exp_name, arch, dict(knobs), size, recipe, str(raw.get("description", "")),
            tuple(raw.get("seeds") or seeds),
        )
    for exp_name, e in experiments.items():
        if e.arch in project:
            try:
                check_on_dummy_batch(e.arch, project[e.arch], in_channels=in_channels, num_classes=num_classes,
                                     input_size=e.input_size, knobs=e.knobs, where=f"experiments.{exp_name}")
            except ValueError as err:
                raise _fail(f"experiments.{exp_name}.arch", str(err)) from None
    check_seed_ranges(config, experiments, repeats)
    ablations: dict[str, Ablation] = {}
    for abl_name, raw in (config.get("ablations") or {}).items():
        key = f"ablations.{abl_name}"
        for side in ("baseline", "treatment"):
            if raw[side] not in experiments:
                raise _fail(f"{key}.{side}", f"must name an experiment of this study, got {raw[side]!r}")
        if raw["baseline"] == raw["treatment"]:
            raise _fail(key, "baseline and treatment are the same experiment")
        sides = [experiments[raw[side]] for side in ("baseline", "treatment")]
        if sides[0].seeds != sides[1].seeds:
            raise _fail(key, f"its baseline {sides[0].name} trains seeds {list(sides[0].seeds)} but its treatment "
                        f"{sides[1].name} trains {list(sides[1].seeds)}: a paired comparison trains the same "
                        "seeds on both sides; give both experiments the same seeds")
        ablations[abl_name] = Ablation(abl_name, raw["baseline"], raw["treatment"], str(raw.get("question", "")))
    return Study(
        name=name, dataset=dataset, folds=folds, seed=seed, threads=threads,
        results_dir=config.get("results_dir", f"results/{name}").rstrip("/") + suffix,
        reports_dir=config.get("reports_dir", f"reports/{name}").rstrip("/") + suffix,
        experiments=experiments, ablations=ablations, mirror=config.get("mirror"),
        description=config.get("description", ""), repeats=repeats, seeds=seeds, smoke=smoke,
        device=config.get("device", "auto"), networks=tuple(config.get("networks") or ()), images=images,
    )


def max_train_seed(epochs: int) -> int:
    """The largest training seed whose last epoch's torch seed (convbench.train.epoch_seed) fits."""
    return (TORCH_SEED_MAX - epochs) // EPOCH_SEED_STRIDE


def check_seed_ranges(config: dict[str, Any], experiments: dict[str, Experiment], repeats: int) -> None:
    """Refuse, naming the key, a split seed (of any repeat) or a run's torch seed (of any repeat
    and epoch) that scikit-learn or torch would refuse once a job runs."""
    seed = config.get("seed", 0)
    if seed + repeats - 1 > SPLIT_SEED_MAX:
        raise _fail("seed", f"{seed} is too large: repeat r splits with seed + r, and scikit-learn's "
                    f"StratifiedKFold takes seeds up to 2**32 - 1 = {SPLIT_SEED_MAX} (with {repeats} "
                    f"repeat(s), seed <= {SPLIT_SEED_MAX - repeats + 1})")
    offset = REPEAT_SEED_STRIDE * (repeats - 1)
    for exp_name, experiment in experiments.items():
        own = (config["experiments"][exp_name] or {}).get("seeds")
        key = f"experiments.{exp_name}.seeds" if own else ("seeds" if config.get("seeds") else "seed")
        limit = max_train_seed(experiment.recipe.epochs) - offset
        for index, value in enumerate(experiment.seeds):
            if value > limit:
                where = key if key == "seed" else f"{key}[{index}]"
                raise _fail(where, f"{value} is too large for torch, which is seeded with (seed + 1000 x repeat) "
                            f"x {EPOCH_SEED_STRIDE} + epoch <= 2**64 - 1: with {repeats} repeat(s) and "
                            f"{experiment.recipe.epochs} epochs ({exp_name}) a seed must be <= {limit}")


def smoke_recipe(recipe: Recipe, batches: int) -> Recipe:
    """A smoke run's recipe: ``recipe`` (its batch size, resolution-independent settings and
    precision kept) for SMOKE_EPOCHS epochs of ``batches`` batches, evaluated on ``batches``
    batches of at most SMOKE_EVAL_BATCH images. ``smoke`` is recorded with every result."""
    epochs = min(recipe.epochs, SMOKE_EPOCHS)
    return dataclasses.replace(recipe, epochs=epochs, warmup_epochs=float(min(recipe.warmup_epochs, epochs)),
                               eval_batch_size=min(recipe.eval_batch_size, SMOKE_EVAL_BATCH),
                               smoke=batches)


def bundled_studies(root: Path = Path(".")) -> list[str]:
    return sorted(p.stem for p in (root / STUDY_DIR).glob("*.yaml"))


def bundled_study_path(name: str, root: Path = Path(".")) -> Path:
    path = root / STUDY_DIR / f"{name}.yaml"
    if not path.exists():
        raise _fail("study", f"no bundled study {name!r} ({path} does not exist); "
                             f"bundled studies: {', '.join(bundled_studies(root))}")
    return path


def resolve_study_argument(text: Path | str) -> Path:
    """What every command's ``--study`` takes: a study file, or the name of a bundled study
    (``--study fashion_mnist_d2l``: ``conf/study/fashion_mnist_d2l.yaml``), as Snakemake's
    ``--config study=NAME`` and DVC's ``-S study=NAME`` do. A file of that name comes first."""
    path = Path(text)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    bundled = STUDY_DIR / f"{path.name}.yaml"
    if bundled.exists():
        return bundled
    raise StudyError(f"{text}: no such study file, and no bundled study of that name ({bundled} does not "
                     f"exist); bundled studies: {', '.join(bundled_studies()) or 'none here'}")


def study_file(params_path: Path | str, selection: str | None) -> Path:
    """The file that describes the study to run: params.yaml itself, or, when ``selection``
    names another study than params.yaml's, the bundled ``conf/study/<selection>.yaml``.

    ``snakemake --config study=NAME`` and ``dvc exp run -S study=NAME`` select the same file
    (DVC's Hydra composition writes it into params.yaml; Snakemake reads it directly).
    """
    params_path = Path(params_path)
    if selection is None:
        return params_path
    on_disk = read_study_file(params_path).get("study")
    if selection == on_disk:
        return params_path
    return bundled_study_path(selection, params_path.parent)


def read_study_file(path: Path | str) -> dict[str, Any]:
    """A study file's YAML as a dict (convbench.schema.read_mapping: duplicate keys refused, and
    every fault of the file itself named); a StudyError, so every command reports a study's faults
    as one kind of error."""
    try:
        return schema.read_mapping(path)
    except schema.SchemaError as err:
        raise StudyError(str(err)) from None


def load_study(path: Path | str, selection: str | None = None, smoke: int | None = None) -> Study:
    """Read and validate a study file (params.yaml), or the bundled study ``selection`` names;
    ``smoke`` (Snakemake's ``--config smoke=N``, the commands' ``--smoke N``) replaces the file's
    own ``smoke`` when given."""
    path = study_file(resolve_study_argument(path) if selection is None else path, selection)
    config = read_study_file(path)
    if smoke is not None:
        config = {**config, "smoke": smoke}
        config.pop("smoke_suffix", None)  # the file's, for its own smoke value
    try:
        return parse_study(config)
    except StudyError as err:
        raise StudyError(f"{path}: {err}") from None


def add_smoke_option(parser: argparse.ArgumentParser) -> None:
    """``--smoke N``: the commands that read a study run it as a smoke run (what Snakemake's
    ``--config smoke=N`` passes on); without it, the study file's own ``smoke``."""
    parser.add_argument("--smoke", type=int, default=None, metavar="N",
                        help="a smoke run of the study: N batches per epoch, two epochs with a resume "
                             "between them, two folds, into its own -smoke directories (0: the real study; default: the "
                             "study file's smoke)")


def study_as_dict(study: Study) -> dict[str, Any]:
    """The whole validated study as plain data: Snakemake's params of the rules whose output shows
    all of it (the report), so that any change to the study reruns them, as DVC's params do."""
    return dataclasses.asdict(study)
