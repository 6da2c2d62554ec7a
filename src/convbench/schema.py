"""The study schema (``study.schema.yaml``): the one description of what a study file may say.

``convbench study``, Snakemake's parse and every ``convbench <stage> --study`` load a study through
``convbench.study.load_study``, which validates it here first, so all of them refuse a bad file
with the same words. Errors name the key (``experiments.lenet.recipe.lr``) and the value, as
people write them, not as JSON Schema reports them. Checks a schema cannot express (a network's
knobs, folds against the data's class sizes, ablations naming experiments) live in
``convbench.study``; the recipe's cross-field rules in ``convbench.recipe``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

SCHEMA_PATH = Path(__file__).resolve().parent / "study.schema.yaml"

# A YAML `true` is no integer, and `10.0` is no count of epochs (JSON Schema allows both).
_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
)
_Validator = validators.extend(Draft202012Validator, type_checker=_TYPE_CHECKER)

_TYPE_WORDS = {"number": "a number", "integer": "an integer", "boolean": "true or false",
               "string": "text", "object": "a mapping", "array": "a list", "null": "null"}


class SchemaError(ValueError):
    """A value the schema refuses; the message names the key and the value."""


@functools.lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as file:
        return yaml.safe_load(file)


def definition(name: str) -> dict[str, Any]:
    """A shared part of the schema (``$defs``), e.g. ``recipe``."""
    return schema()["$defs"][name]


def choices(definition_name: str, key: str) -> tuple[Any, ...]:
    """The allowed values of an enumerated key, e.g. ``choices("recipe", "init")``."""
    return tuple(definition(definition_name)["properties"][key]["enum"])


@functools.lru_cache(maxsize=None)
def _validator(part: str | None) -> Draft202012Validator:
    root = schema()
    if part is None:
        return _Validator(root)
    return _Validator({**definition(part), "$defs": root["$defs"]})


def validate(instance: Any, part: str | None = None, prefix: str = "") -> None:
    """Raise SchemaError for the most relevant thing the schema (or its ``$defs`` ``part``)
    refuses in ``instance``; ``prefix`` is the key path of ``instance`` in its file."""
    error = best_match(_validator(part).iter_errors(instance))
    if error is not None:
        raise SchemaError(describe(error, prefix))


def _key(prefix: str, path: list[Any]) -> str:
    key = prefix
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def describe(error: ValidationError, prefix: str = "") -> str:
    """``<key>: <what is wrong>, got <value>``."""
    path = list(error.absolute_path)
    value = error.instance
    kind, rule = error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = error.schema.get("properties", {})
        known = sorted(key for key in allowed if not key.startswith("_"))  # "_": Hydra's, not a user's
        extra = sorted(set(value) - set(allowed))
        return f"{_key(prefix, [*path, extra[0]])}: unknown key; known keys: {', '.join(known)}"
    if kind == "required":
        missing = [key for key in rule if key not in value]
        return f"{_key(prefix, [*path, missing[0]])}: missing (it is required)"
    if kind == "type":
        wanted = [rule] if isinstance(rule, str) else list(rule)
        if isinstance(value, str) and {"number", "integer"} & set(wanted):
            try:
                float(value)
            except ValueError:
                pass
            else:
                return (f"{_key(prefix, path)}: must be a number, got the text {value!r} (YAML reads "
                        "1e-3 as text: write 1.0e-3 or 0.001)")
        words = " or ".join(_TYPE_WORDS[name] for name in wanted)
        return f"{_key(prefix, path)}: must be {words}, got {value!r}"
    problem = {
        "enum": lambda: f"must be one of {list(rule)}",
        "minimum": lambda: f"must be >= {rule}",
        "exclusiveMinimum": lambda: f"must be > {rule}",
        "maximum": lambda: f"must be <= {rule}",
        "exclusiveMaximum": lambda: f"must be < {rule}",
        "pattern": lambda: f"must be {error.schema.get('description', f'text matching {rule}')}",
        "maxLength": lambda: f"must be at most {rule} characters long, not {len(value)} (longer names make "
                             "file names past the 255 bytes a file system allows)",
        "minItems": lambda: "must not be empty",
        "minProperties": lambda: "must not be empty",
        "uniqueItems": lambda: "lists a value twice",
    }.get(kind)
    if problem is None:
        return f"{_key(prefix, path)}: {error.message}"
    if "propertyNames" in error.relative_schema_path:  # a bad key: name it in the path
        path = [*path, value]
    return f"{_key(prefix, path)}: {problem()}, got {value!r}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word; a study refuses them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise SchemaError(
                    f"duplicate key {key!r} at lines {first_line[key]} and {line}: YAML would keep "
                    "only the second; rename or remove one"
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def read_mapping(path: Path | str) -> dict[str, Any]:
    """A study file's YAML as a dict, refusing duplicate keys. Every fault of the file itself (it
    cannot be read, is not YAML, is empty or is not a mapping) is a SchemaError that names it."""
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.load(file, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except IsADirectoryError:
        raise SchemaError(f"{path}: is a directory; expected a study file (YAML), e.g. params.yaml") from None
    except OSError as err:
        raise SchemaError(f"{path}: cannot be read ({err.strerror or err}); expected a study file (YAML), "
                          "e.g. params.yaml or a bundled study's name") from None
    except UnicodeDecodeError:
        raise SchemaError(f"{path}: is not text (not UTF-8); expected a study file (YAML)") from None
    except SchemaError as err:
        raise SchemaError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise SchemaError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if config is None:
        raise SchemaError(f"{path}: is empty; expected a study: a mapping with study, dataset, folds and "
                          "experiments (see conf/study/digits.yaml)")
    if not isinstance(config, dict):
        text = repr(config)
        raise SchemaError(f"{path}: must be a mapping of keys (study, dataset, folds, experiments, ...), "
                          f"got {type(config).__name__} {text if len(text) <= 60 else text[:57] + '...'}")
    return config
