"""Workflow configuration: schema validation with defaults, semantic checks and the experiment grid.

Every error names the key, the offending value and what is accepted, and is raised before any job runs
(the Snakefile validates at DAG time).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .costmodel import CostModel
from .presets import ALL_PRESETS, get_preset


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and what is accepted."""


def load_schema(name: str = "config") -> dict[str, Any]:
    """Load one of the package's JSON schemas (``config`` or ``metadata``)."""
    text = resources.files("phase_energy").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


def _fill_defaults(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    """Fill missing keys from the schema's ``default`` values, recursively."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(instance.get(key), dict):
            _fill_defaults(sub, instance[key])


def _coerce(schema: Mapping[str, Any], value: Any, where: str = "") -> Any:
    """Turn command-line strings into the schema's types (``--config batch_sizes=[1,32]`` gives strings).

    Refuses what would pass the schema but be silently wrong: a float where an integer is expected (1.0
    would name a ``bs~1.0`` folder no rule writes) and non-finite numbers (.nan, .inf).
    """
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"config key {where or '<top level>'!r}: value {value!r} is not accepted; expected a "
                              "finite number")
        if "integer" in kinds and "number" not in kinds:
            raise ConfigError(f"config key {where!r}: value {value!r} is not accepted; expected an integer "
                              f"(write {int(value)} without a decimal point)" if value.is_integer() else
                              f"config key {where!r}: value {value!r} is not accepted; expected an integer")
    if isinstance(value, str):
        text = value.strip()
        if "boolean" in kinds and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if "integer" in kinds and text.lstrip("-").isdigit():
            return int(text)
        if "number" in kinds:
            try:
                number = float(text)
            except ValueError:
                return value
            return _coerce(schema, number, where)
        if "null" in kinds and text.lower() in ("null", "none", "~"):
            return None
        return value
    if isinstance(value, list) and "items" in schema:
        return [_coerce(schema["items"], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and "properties" in schema:
        return {k: _coerce(schema["properties"][k], v, f"{where}.{k}" if where else k) if k in schema["properties"]
                else v for k, v in value.items()}
    return value


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _accepted(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    v = error.validator
    if v == "enum":
        return "one of " + ", ".join(repr(x) for x in list(error.validator_value))  # type: ignore[arg-type]
    if v == "type":
        return f"a value of type {error.validator_value}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"a number {sign} {error.validator_value}"
    if v == "pattern":
        if "powercap" in str(error.validator_value):
            return "'default', 'powercap:<watts>' or 'smclock:<MHz>' with integer numbers"
        return f"text matching {error.validator_value}"
    if v == "minItems":
        return f"a list of at least {error.validator_value} item(s)"
    if v == "uniqueItems":
        return "a list without repeated values"
    if v == "minLength":
        return "a non-empty string"
    if v == "additionalProperties":
        return "keys " + ", ".join(sorted(schema.get("properties", {})))
    return f"{v}={error.validator_value!r}"


def _schema_error(error: jsonschema.ValidationError) -> ConfigError:
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        instance: dict[str, Any] = dict(error.instance)  # type: ignore[arg-type]
        unknown = sorted(set(instance) - allowed)
        where = _path(error)
        prefix = "" if where == "<top level>" else f"{where}."
        return ConfigError(
            f"config key '{prefix}{unknown[0]}': unknown key (value {instance[unknown[0]]!r}); "
            f"accepted: {_accepted(error)}"
        )
    return ConfigError(
        f"config key {_path(error)!r}: value {error.instance!r} is not accepted; expected {_accepted(error)}"
    )


@dataclass(frozen=True)
class Lever:
    """One GPU setting of the grid: ``default``, ``powercap`` (watts) or ``smclock`` (MHz)."""

    kind: str
    value: int | None = None

    @classmethod
    def parse(cls, text: str) -> Lever:
        """Parse ``default``, ``powercap:<W>`` or ``smclock:<MHz>``."""
        if text == "default":
            return cls("default")
        kind, _, value = text.partition(":")
        if kind not in ("powercap", "smclock") or not value.isdigit():
            raise ConfigError(
                f"config key 'levers': value {text!r} is not accepted; expected 'default', "
                "'powercap:<watts>' or 'smclock:<MHz>' with integer numbers (e.g. powercap:400, smclock:1410)"
            )
        return cls(kind, int(value))

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value}"

    @property
    def slug(self) -> str:
        """File-name form: ``powercap-400``."""
        return self.kind if self.value is None else f"{self.kind}-{self.value}"

    @classmethod
    def from_slug(cls, slug: str) -> Lever:
        """Inverse of :attr:`slug`."""
        return cls.parse(slug.replace("-", ":", 1))


def _check_semantics(cfg: dict[str, Any]) -> None:
    for i, name in enumerate(cfg["architectures"]):
        if name not in ALL_PRESETS:
            raise ConfigError(
                f"config key 'architectures[{i}]': value {name!r} is not a known preset; "
                f"accepted: {', '.join(sorted(ALL_PRESETS))}"
            )
    for i, name in enumerate(cfg["clear"]["architectures"]):
        if name not in ALL_PRESETS:
            raise ConfigError(
                f"config key 'clear.architectures[{i}]': value {name!r} is not a known preset; "
                f"accepted: {', '.join(sorted(ALL_PRESETS))}"
            )
    gpu = cfg["gpu"]
    if gpu["power_limit_min_w"] > gpu["power_limit_max_w"]:
        raise ConfigError(
            f"config key 'gpu.power_limit_min_w': value {gpu['power_limit_min_w']} is above "
            f"gpu.power_limit_max_w={gpu['power_limit_max_w']}; expected min <= max"
        )
    if gpu["sm_clock_min_mhz"] > gpu["sm_clock_max_mhz"]:
        raise ConfigError(
            f"config key 'gpu.sm_clock_min_mhz': value {gpu['sm_clock_min_mhz']} is above "
            f"gpu.sm_clock_max_mhz={gpu['sm_clock_max_mhz']}; expected min <= max"
        )
    seen: dict[str, int] = {}
    for i, text in enumerate(cfg["levers"]):
        lever = Lever.parse(text)
        if str(lever) in seen:  # powercap:0300 and powercap:300 are one lever
            raise ConfigError(f"config key 'levers[{i}]': value {text!r} repeats levers[{seen[str(lever)]}] "
                              f"({cfg['levers'][seen[str(lever)]]!r}), the same lever {lever}; list each once")
        seen[str(lever)] = i
        if lever.kind == "powercap":
            lo, hi = gpu["power_limit_min_w"], gpu["power_limit_max_w"]
            if not lo <= lever.value <= hi:  # type: ignore[operator]
                raise ConfigError(
                    f"config key 'levers[{i}]': value {text!r} is outside the card's power-limit range; "
                    f"accepted: powercap:<W> with {lo:g} <= W <= {hi:g} (gpu.power_limit_min_w/max_w)"
                )
        if lever.kind == "smclock":
            lo, hi = gpu["sm_clock_min_mhz"], gpu["sm_clock_max_mhz"]
            if not lo <= lever.value <= hi:  # type: ignore[operator]
                raise ConfigError(
                    f"config key 'levers[{i}]': value {text!r} is outside the card's SM clock range; "
                    f"accepted: smclock:<MHz> with {lo} <= MHz <= {hi} (gpu.sm_clock_min_mhz/max_mhz)"
                )


def validate_config(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a configuration, fill defaults and return the full config (a new dict)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping of keys to values, got {type(raw).__name__}")
    if "engine" in raw:  # the single engine became a grid axis
        raise ConfigError(
            f"config key 'engine' (value {raw['engine']!r}) was replaced by 'engines', a list: "
            f"engines: [{raw['engine']}]; accepted engines: native, vllm")
    schema = load_schema("config")
    cfg = _coerce(schema, copy.deepcopy(dict(raw)))
    _fill_defaults(schema, cfg)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise _schema_error(errors[0])
    _check_semantics(cfg)
    cfg["levers"] = [str(Lever.parse(t)) for t in cfg["levers"]]  # one spelling: powercap:0300 -> powercap:300
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply overrides and validate it."""
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    raw.update(overrides or {})
    return validate_config(raw)


def config_hash(cfg: Mapping[str, Any]) -> str:
    """Short, stable hash of a validated config (recorded in every trace's metadata)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


ENGINES = ("native", "vllm")


@dataclass(frozen=True)
class GridPoint:
    """One measurement job: engine x architecture x batch x context x lever (x repetition)."""

    arch: str
    batch: int
    context: int
    lever: str
    rep: int = 0
    engine: str = "native"

    @property
    def path(self) -> str:
        """Relative folder of the job's trace, ``key~value`` style."""
        return (
            f"engine~{self.engine}/arch~{self.arch}/bs~{self.batch}/ctx~{self.context}/"
            f"lever~{Lever.parse(self.lever).slug}/rep~{self.rep}"
        )

    @classmethod
    def from_wildcards(cls, w: Mapping[str, str]) -> GridPoint:
        """Build a point from Snakemake wildcards (engine, arch, bs, ctx, lever slug, rep)."""
        return cls(w["arch"], int(w["bs"]), int(w["ctx"]), str(Lever.from_slug(w["lever"])), int(w["rep"]),
                   w["engine"])

    @classmethod
    def from_path(cls, path: str | Path) -> GridPoint:
        """The point of a trace folder (its ``key~value`` parts, anywhere in the path)."""
        parts = dict(part.split("~", 1) for part in Path(path).parts if "~" in part)
        missing = [k for k in ("engine", "arch", "bs", "ctx", "lever", "rep") if k not in parts]
        if missing:
            raise ValueError(f"trace folder {str(path)!r} lacks the parts {missing} of "
                             "engine~E/arch~A/bs~B/ctx~C/lever~L/rep~R")
        return cls.from_wildcards(parts)


def expand_grid(cfg: Mapping[str, Any]) -> Iterator[GridPoint]:
    """Every point of the grid, in a stable order."""
    for engine in cfg["engines"]:
        for arch in cfg["architectures"]:
            for bs in cfg["batch_sizes"]:
                for ctx in cfg["contexts"]:
                    for lever in cfg["levers"]:
                        for rep in range(cfg["repetitions"]):
                            yield GridPoint(arch, bs, ctx, lever, rep, engine)


def point_skip_reason(cfg: Mapping[str, Any], point: GridPoint, backend: str) -> str | None:
    """Why a point cannot run (engine support, memory budget, lever not permitted), or None when it can."""
    arch = get_preset(point.arch)
    if point.engine == "vllm":
        from .hfconfig import vllm_unsupported

        why = vllm_unsupported(arch)
        if why:
            return f"engine: {why}"
    model = CostModel(arch, engine=point.engine)
    positions = max(cfg["output_lengths"])
    if point.engine == "vllm":  # a serving engine's decode positions only move forward: lead-in and windows too
        from .protocol import Settings, forward_positions

        settings = Settings.from_config(cfg["measurement"], max_output=positions)
        positions = forward_positions(settings, model, point.batch, point.context)
    need = model.memory_bytes(point.batch, point.context, positions)
    budget = cfg["gpu"]["memory_budget_gb"] * 1e9
    if need > budget:
        return (
            f"memory: needs {need / 1e9:.1f} GB (weights {model.model_bytes / 1e9:.1f} GB + cache and "
            f"activations{model.layout_note}) > gpu.memory_budget_gb={cfg['gpu']['memory_budget_gb']}"
        )
    slurm_clock = point.lever.startswith("smclock:") and cfg["cluster"]["gpu_freq_for_smclock"]
    if backend == "nvml" and point.lever != "default" and not cfg["allow_gpu_settings"] and not slurm_clock:
        return (
            f"lever not permitted: {point.lever!r} changes the GPU's settings and allow_gpu_settings is "
            "false; set allow_gpu_settings: true on a GPU you may reconfigure, or use backend: sim"
        )
    return None
