"""The torch-free network catalogue and the schema: each the one source of what it describes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from convbench import networks, schema
from convbench.models import interface
from convbench.recipe import Recipe


def test_the_catalogue_is_the_registry() -> None:
    """models/networks.json is what the registry says; rewrite it with `python -m convbench.models`."""
    on_disk = {name: {"module": n.module, "default_input_size": n.default_input_size,
                      "min_input_size": n.min_input_size, "knobs": n.knobs,
                      "min_input_size_by_stem": n.min_input_size_by_stem}
               for name, n in networks.catalog().items()}
    assert on_disk == interface(), "models/networks.json is stale: run `python -m convbench.models`"


def test_checking_a_study_imports_no_torch() -> None:
    code = ("import sys; from convbench.study import load_study; load_study('params.yaml'); "
            "from convbench.provenance import stage_sources; stage_sources('run', 'vgg11'); "
            "print(sorted(m for m in ('torch', 'torchvision', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["check", "download", "prepare", "split", "aggregate", "study"])
def test_the_commands_without_a_network_import_no_torch(command: str) -> None:
    """Their jobs start in a fraction of a second, not the seconds torch's import costs."""
    from convbench.commands import COMMANDS

    code = (f"import sys, importlib; import convbench.cli; importlib.import_module({COMMANDS[command].module!r}); "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("knob", "value"), [("activation", "swish"), ("pool", "median"),
                                             ("dropout", 1.0), ("width", -1), ("hidden", 0),
                                             ("batch_norm", 1), ("stem", "cifar")])
def test_the_models_refuse_what_the_catalogue_refuses(knob: str, value: object) -> None:
    """One check per knob value: the study's (torch-free) and the builders' are the same function."""
    from convbench.models import build

    with pytest.raises(ValueError) as by_study:
        networks.check_knobs("alexnet", {knob: value})
    with pytest.raises(ValueError) as by_build:
        build("alexnet", input_size=65, **{knob: value})
    assert str(by_study.value) == str(by_build.value)


def test_the_schema_describes_every_recipe_field() -> None:
    fields = {f.name for f in dataclasses.fields(Recipe)}
    assert set(schema.definition("recipe")["properties"]) == fields | {"preset"}


def test_schema_errors_name_the_key_and_the_value() -> None:
    with pytest.raises(schema.SchemaError, match=r"^recipe\.momentum: must be < 1, got 1\.5$"):
        schema.validate({"momentum": 1.5}, "recipe", prefix="recipe")
    with pytest.raises(schema.SchemaError, match=r"^seeds\[1\]: must be an integer, got 'two'$"):
        schema.validate({"study": "s", "dataset": "digits", "folds": 3, "experiments": {"a": {"arch": "mlp"}},
                         "seeds": [1, "two"]})
    with pytest.raises(schema.SchemaError, match=r"^experiments\.a b: must be a name of letters"):
        schema.validate({"study": "s", "dataset": "digits", "folds": 3, "experiments": {"a b": {"arch": "mlp"}}})
    with pytest.raises(schema.SchemaError, match=r"^dataset: missing \(it is required\)$"):
        schema.validate({"study": "s", "folds": 3, "experiments": {"a": {"arch": "mlp"}}})


def test_one_list_of_data_sets() -> None:
    """The built-in data sets are the ones convbench can download and size-check, and the schema's
    description names them (any other name is a folder of the project's images)."""
    from convbench.datasets import DATASETS
    from convbench.study import TRAIN_SIZES

    assert set(DATASETS) == set(TRAIN_SIZES)
    described = schema.schema()["properties"]["dataset"]["description"]
    assert described.startswith(f"a built-in data set ({', '.join(sorted(DATASETS))})")
