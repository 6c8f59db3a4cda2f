"""The bake configuration file: where stores and caches go, which runner, and secrets by reference.

A TOML or YAML file (chosen by its suffix: ``.toml``, ``.yaml``/``.yml``)::

    [target]
    root = "s3://bucket/stores"
    storage_options = { key = "${AWS_ACCESS_KEY_ID}", secret = "${AWS_SECRET_ACCESS_KEY}" }

    [cache]
    root = "/scratch/arcoforge-cache"

    [inputs]
    storage_options = { anon = true }

    [runner]
    name = "dataflow"              # direct | dask | dataflow | flink
    num_workers = 2
    max_mem = "2GB"
    options = { experiments = ["use_runner_v2"] }   # any other Beam pipeline option

    overrides = ["max_mem"]        # these values win over a recipe's own (default: the recipe's win)

    [stac]
    public_url = "https://data.example.org/stores"   # where a copy of target.root is published
    storage_options = { anon = true }                 # what its readers need (public options only)

    [runner.dataflow]
    project = "my-project"
    region = "europe-west1"
    temp_location = "gs://my-bucket/tmp"

A secret is never written in the file: a value ``"${NAME}"`` is read from the
environment variable ``NAME`` when the bake starts, and a variable that is not
set is an error naming the field and the variable. Command-line flags override
the file (:meth:`BakeConfig.with_overrides`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import RecipeError
from .runtime.context import OVERRIDABLE

logger = logging.getLogger(__name__)

RUNNERS = ("direct", "dask", "dataflow", "flink")
_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

_STORAGE = {
    "type": "object",
    "properties": {
        "root": {"type": "string", "minLength": 1, "x-expected": "a path or fsspec URL"},
        "storage_options": {"type": "object", "x-expected": "a table of fsspec options"},
    },
    "additionalProperties": False,
}
_POSITIVE_INT = {"type": "integer", "minimum": 1, "x-expected": "a whole number of at least 1"}
_TEXT = {"type": "string", "minLength": 1, "x-expected": "a non-empty string"}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "target": _STORAGE,
        "cache": {"type": "object", "properties": {"root": _STORAGE["properties"]["root"]},
                  "additionalProperties": False},
        "inputs": {
            "type": "object",
            "properties": {"storage_options": _STORAGE["properties"]["storage_options"]},
            "additionalProperties": False,
        },
        "runner": {
            "type": "object",
            "properties": {
                "name": {"enum": list(RUNNERS), "x-expected": f"one of {', '.join(RUNNERS)}"},
                "num_workers": _POSITIVE_INT,
                "max_mem": {"type": ["string", "integer"], "x-expected": "a size such as 2GB, or bytes"},
                "options": {"type": "object", "x-expected": "a table of Beam pipeline options"},
                "overrides": {"type": "array", "items": {"enum": list(OVERRIDABLE)},
                              "x-expected": f"a list of some of {', '.join(OVERRIDABLE)}"},
                "dask": {
                    "type": "object",
                    "properties": {
                        "address": _TEXT,
                        "n_workers": _POSITIVE_INT,
                        "threads_per_worker": _POSITIVE_INT,
                        "memory_limit": {"type": ["string", "integer"],
                                         "x-expected": "a size per worker such as 4GB"},
                        "npartitions": _POSITIVE_INT,
                    },
                    "additionalProperties": False,
                },
                "dataflow": {
                    "type": "object",
                    "properties": {
                        "project": _TEXT,
                        "region": _TEXT,
                        "temp_location": {"type": "string", "pattern": "^gs://",
                                          "x-expected": "a gs:// URL"},
                        "staging_location": {"type": "string", "pattern": "^gs://",
                                             "x-expected": "a gs:// URL"},
                        "job_name": _TEXT,
                        "machine_type": _TEXT,
                        "max_num_workers": _POSITIVE_INT,
                        "num_workers": _POSITIVE_INT,
                        "service_account_email": _TEXT,
                        "sdk_container_image": _TEXT,
                        "network": _TEXT,
                        "subnetwork": _TEXT,
                        "use_public_ips": {"type": "boolean", "x-expected": "true or false"},
                        "requirements_file": _TEXT,
                        "extra_packages": {"type": "array", "items": {"type": "string"},
                                           "x-expected": "a list of package files"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"},
                                   "x-expected": "a table of label = value strings"},
                    },
                    "additionalProperties": False,
                },
                "flink": {
                    "type": "object",
                    "properties": {
                        "flink_master": _TEXT,
                        "job_endpoint": _TEXT,
                        "flink_version": _TEXT,
                        "flink_job_server_jar": _TEXT,
                        "environment_type": {"enum": ["DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK"],
                                             "x-expected": "one of DOCKER, PROCESS, EXTERNAL, LOOPBACK"},
                        "environment_config": _TEXT,
                        "parallelism": _POSITIVE_INT,
                        "max_parallelism": _POSITIVE_INT,
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        "stac": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean", "x-expected": "true or false"},
                "schemas": _TEXT,
                "public_url": {"type": "string", "minLength": 1,
                               "x-expected": "the URL where a copy of the target root is published"},
                "storage_options": {"type": "object", "x-expected": "a table of public fsspec options "
                                    "readers need, such as anon = true"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


@dataclasses.dataclass(frozen=True)
class BakeConfig:
    """Everything a bake needs besides the recipe; empty fields mean "not given"."""

    target_root: str | None = None
    target_storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    cache_root: str | None = None
    source_storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    runner: str = "direct"
    num_workers: int = 1
    max_mem: str | int | None = None
    pipeline_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dask: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataflow: dict[str, Any] = dataclasses.field(default_factory=dict)
    flink: dict[str, Any] = dataclasses.field(default_factory=dict)
    stac: bool = True
    stac_schemas: str | None = None
    # Run-time values that win over a recipe's own (see arcoforge.runtime.context.BakeContext.overrides).
    overrides: tuple[str, ...] = ()
    stac_public_url: str | None = None  # where a copy of target_root is published (asset hrefs point there)
    stac_storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # public, for readers
    source: str | None = None  # the file it was read from, for messages

    def with_overrides(self, **flags: Any) -> "BakeConfig":
        """A copy with every flag that was given (not ``None``) in place of the file's value.

        Runner sections take dicts that are merged key by key
        (``dask={"address": ...}`` keeps the file's ``n_workers``).
        """
        changes: dict[str, Any] = {}
        for name, value in flags.items():
            if value is None:
                continue
            if name not in {f.name for f in dataclasses.fields(self)}:
                raise TypeError(f"BakeConfig has no field {name!r}")
            current = getattr(self, name)
            if isinstance(current, dict) and isinstance(value, Mapping):
                value = {**current, **{k: v for k, v in value.items() if v is not None}}
            changes[name] = value
        updated = dataclasses.replace(self, **changes)
        if updated.runner not in RUNNERS:
            raise RecipeError(f"runner {updated.runner!r} is not one of {', '.join(RUNNERS)}")
        return updated

    def secret_references(self) -> dict[str, str]:
        """``{field path: environment variable}`` of every value given as ``${NAME}``."""
        found: dict[str, str] = {}
        for section in ("target_storage_options", "source_storage_options", "pipeline_options",
                        "dask", "dataflow", "flink"):
            found.update(_env_refs(getattr(self, section), section))
        return found

    def resolved(self) -> "BakeConfig":
        """A copy with every ``${NAME}`` replaced by the environment variable's value.

        Raises :class:`RecipeError` naming the field and the variable (never a value)
        when a variable is not set. The values are registered for redaction from logs.
        """
        values: dict[str, Any] = {}
        secrets: list[str] = []
        where = self.source or "configuration"
        for section in ("target_storage_options", "source_storage_options", "pipeline_options",
                        "dask", "dataflow", "flink"):
            values[section] = _resolve(getattr(self, section), section, where, secrets)
        if secrets:
            _register_secrets(secrets)
        return dataclasses.replace(self, **values)


def _env_refs(value: Any, path: str) -> dict[str, str]:
    if isinstance(value, Mapping):
        found: dict[str, str] = {}
        for key, item in value.items():
            found.update(_env_refs(item, f"{path}.{key}"))
        return found
    if isinstance(value, list):
        found = {}
        for i, item in enumerate(value):
            found.update(_env_refs(item, f"{path}[{i}]"))
        return found
    if isinstance(value, str) and _ENV_REF.match(value):
        return {path: _ENV_REF.match(value).group(1)}
    return {}


def _resolve(value: Any, path: str, where: str, secrets: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {key: _resolve(item, f"{path}.{key}", where, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, f"{path}[{i}]", where, secrets) for i, item in enumerate(value)]
    match = _ENV_REF.match(value) if isinstance(value, str) else None
    if match:
        name = match.group(1)
        if name not in os.environ:
            raise RecipeError(f"{where}: {_field_name(path)} names environment variable {name}, which is not set")
        secrets.append(os.environ[name])
        return os.environ[name]
    return value


def _register_secrets(secrets: list[str]) -> None:
    """Have log records redacted of resolved secrets."""
    from .io.redaction import register_secrets

    register_secrets(secrets)


# Config file sections as the user wrote them, for messages (``target.storage_options.key``).
_FIELD_NAMES = {
    "target_storage_options": "target.storage_options",
    "source_storage_options": "inputs.storage_options",
    "pipeline_options": "runner.options",
    "dask": "runner.dask",
    "dataflow": "runner.dataflow",
    "flink": "runner.flink",
}


def _field_name(path: str) -> str:
    head, _, rest = path.partition(".")
    name = _FIELD_NAMES.get(head, head)
    return f"{name}.{rest}" if rest else name


def schema_errors(document: Any, schema: Mapping[str, Any], source: str) -> list[str]:
    """One message per problem, each naming the field and what was expected.

    Used for config files and feedstock ``meta.yaml`` alike. Schema nodes may
    carry ``x-expected`` (what a valid value looks like), which the message quotes.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        messages.append(f"{source}: {describe_schema_error(error)}")
    return messages


def _path_text(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe_schema_error(error: Any) -> str:
    """``field X: what is wrong (expected ...)`` for one jsonschema error."""
    where = _path_text(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "required":
        missing = re.search(r"'(.+?)' is a required property", error.message)
        name = missing.group(1) if missing else "?"
        field = f"{where}.{name}" if where else name
        expected = (schema.get("properties", {}).get(name, {}) or {}).get("x-expected")
        return f"field {field} is missing" + (f" (expected {expected})" if expected else "")
    if error.validator == "additionalProperties":
        extra = re.findall(r"'(.+?)'", error.message.split("(")[-1])
        known = sorted(schema.get("properties", {}))
        return (f"field {where or '(top level)'}: unknown field(s) {', '.join(extra) or error.message}; "
                f"expected some of {', '.join(known)}")
    expected = schema.get("x-expected")
    if expected is None:
        if error.validator == "type":
            expected = f"a value of type {error.validator_value}"
        elif error.validator == "enum":
            expected = f"one of {', '.join(map(str, error.validator_value))}"
        elif error.validator == "pattern":
            expected = f"text matching {error.validator_value}"
        elif error.validator == "minItems":
            expected = f"at least {error.validator_value} item(s)"
    got = repr(error.instance)
    if len(got) > 80:
        got = got[:77] + "..."
    return f"field {where or '(top level)'}: {got} is not valid" + (f"; expected {expected}" if expected else
                                                                      f": {error.message}")


def read_document(path: str | os.PathLike) -> Any:
    """A TOML or YAML file as Python data (by suffix); syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise RecipeError(f"{path}: not valid TOML: {error}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RecipeError(f"{path}: not valid YAML: {error}") from None
    raise RecipeError(f"config file {path}: expected a .toml, .yaml or .yml file")


def _check_public(options: Mapping[str, Any], where: str) -> None:
    """Options published in STAC documents must hold nothing secret: a key that looks secret is an error."""
    from .io.redaction import secret_looking_keys

    refused = secret_looking_keys(options)
    if refused:
        raise RecipeError(f"{where}: {refused} may hold secrets, and these options are published in every "
                          "collection; give only public options (anon, endpoint_url, region_name...)")


def load_config(path: str | os.PathLike) -> BakeConfig:
    """Read and check a config file; every problem is reported at once, naming its field."""
    document = read_document(path)
    if document is None:
        document = {}
    errors = schema_errors(document, CONFIG_SCHEMA, str(path))
    if errors:
        raise RecipeError("invalid config file:\n  " + "\n  ".join(errors))
    runner = document.get("runner", {})
    stac = document.get("stac", {})
    _check_public(stac.get("storage_options") or {}, f"{path}: stac.storage_options")
    return BakeConfig(
        target_root=document.get("target", {}).get("root"),
        target_storage_options=dict(document.get("target", {}).get("storage_options", {})),
        cache_root=document.get("cache", {}).get("root"),
        source_storage_options=dict(document.get("inputs", {}).get("storage_options", {})),
        runner=runner.get("name", "direct"),
        num_workers=runner.get("num_workers", 1),
        max_mem=runner.get("max_mem"),
        pipeline_options=dict(runner.get("options", {})),
        dask=dict(runner.get("dask", {})),
        dataflow=dict(runner.get("dataflow", {})),
        flink=dict(runner.get("flink", {})),
        stac=stac.get("enabled", True),
        stac_schemas=stac.get("schemas"),
        overrides=tuple(runner.get("overrides", ())),
        stac_public_url=stac.get("public_url"),
        stac_storage_options=dict(stac.get("storage_options", {})),
        source=str(path),
    )
