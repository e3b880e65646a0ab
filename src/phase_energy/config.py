"""Workflow configuration: schema validation with defaults, semantic checks and the experiment grid.

Every error names the key, the offending value and what is accepted, and is raised before any job runs
(the Snakefile validates at DAG time).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from phase_energy.grid import Lever, LeverError
from phase_energy.model.checkpoint import RANDOM, Checkpoint, CheckpointError, read_checkpoint
from phase_energy.model.presets import ALL_PRESETS, get_preset, register_arch, tensor_parallel_problem


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and what is accepted."""


def load_schema(name: str = "config") -> dict[str, Any]:
    """Load one of the package's JSON schemas (``config`` or ``metadata``)."""
    text = resources.files("phase_energy").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


@functools.cache
def _defaults() -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    _fill_defaults(load_schema("config"), cfg)
    return cfg


def schema_defaults(section: str | None = None) -> Any:
    """The schema's default of a top-level key (``measurement``, ``clear``, ...), or of the whole config.

    The schema is the one place a default is written: settings classes take theirs from here.
    """
    out = _defaults() if section is None else _defaults()[section]
    return copy.deepcopy(out)


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
        n = error.validator_value
        return f"a list of at least {n} {'item' if n == 1 else 'items'}"
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


def _lever(text: str, i: int) -> Lever:
    try:
        return Lever.parse(text)
    except LeverError as e:
        raise ConfigError(f"config key 'levers[{i}]': value {text!r} is not accepted: {e}") from e


def _check_weights(cfg: dict[str, Any]) -> set[str]:
    """Check each checkpoint folder of ``weights`` and register its architecture; the names it adds."""
    named = set()
    for name, source in cfg["weights"].items():
        if source == RANDOM:
            if name not in ALL_PRESETS:
                raise ConfigError(f"config key 'weights.{name}': value 'random' needs a preset's shapes and {name!r} "
                                  f"is not a preset; accepted: a checkpoint folder, or one of "
                                  f"{', '.join(sorted(ALL_PRESETS))} with 'random'")
            continue
        try:
            ckpt = read_checkpoint(source, name, ALL_PRESETS.get(name))
        except CheckpointError as e:
            raise ConfigError(f"config key 'weights.{name}': value {source!r} is not accepted: {e}") from None
        register_arch(ckpt.arch)
        named.add(name)
    return named


def checkpoint_of(cfg: Mapping[str, Any], arch: str) -> Checkpoint | None:
    """The checkpoint an architecture's weights come from, or None for random weights."""
    source = cfg.get("weights", {}).get(arch, RANDOM)
    return None if source == RANDOM else read_checkpoint(source, arch, ALL_PRESETS.get(arch))


# lever kind -> (what its range is, its unit, the gpu section's key stem of the range's bounds)
LEVER_RANGES = {"powercap": ("power-limit range", "W", "power_limit"), "smclock": ("SM clock range", "MHz", "sm_clock")}


def _check_semantics(cfg: dict[str, Any], grid_given: bool = True) -> None:
    own = _check_weights(cfg)
    known = set(ALL_PRESETS) | own
    used = {*cfg["architectures"], *cfg["clear"]["architectures"]}
    # a preset's checkpoint may wait for a run that names it; a config without a grid (a job's part) names none
    unused = sorted(own - used - set(ALL_PRESETS)) if grid_given else []
    if unused:
        name = unused[0]
        raise ConfigError(
            f"config key 'weights.{name}': {name!r} is an architecture of its own (not a preset) that no "
            f"architectures or clear.architectures entry names, so its checkpoint would not be measured; "
            f"accepted: a name these lists hold ({', '.join(sorted(used))}), or add {name!r} to architectures"
        )
    for where, names in (("architectures", cfg["architectures"]), ("clear.architectures",
                                                                   cfg["clear"]["architectures"])):
        for i, name in enumerate(names):
            if name not in known:
                raise ConfigError(
                    f"config key '{where}[{i}]': value {name!r} is not a known preset; accepted: "
                    f"{', '.join(sorted(ALL_PRESETS))}, or a name of your own with a checkpoint folder under "
                    f"weights ({where.split('.')[0]}: [{name}], weights: {{{name}: /path/to/checkpoint}})"
                )
    _check_gpus(cfg)
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
        lever = _lever(text, i)
        if str(lever) in seen:  # powercap:0300 and powercap:300 are one lever
            raise ConfigError(f"config key 'levers[{i}]': value {text!r} repeats levers[{seen[str(lever)]}] "
                              f"({cfg['levers'][seen[str(lever)]]!r}), the same lever {lever}; list each once")
        seen[str(lever)] = i
        for sub in lever.static_levers:  # a phase lever: each phase's lever
            part = f"{sub.kind}:<W>" if sub.kind == "powercap" else f"{sub.kind}:<MHz>"
            where = "" if sub is lever else f" (its {'prefill' if sub is lever.prefill else 'decode'} lever {sub})"
            if sub.kind in LEVER_RANGES:
                what, unit, key = LEVER_RANGES[sub.kind]
                lo, hi = gpu[f"{key}_min_{unit.lower()}"], gpu[f"{key}_max_{unit.lower()}"]
                if not lo <= sub.value <= hi:  # type: ignore[operator]
                    raise ConfigError(
                        f"config key 'levers[{i}]': value {text!r}{where} is outside the card's {what}; "
                        f"accepted: {part} with {lo:g} <= {unit} <= {hi:g} (gpu.{key}_min_{unit.lower()}/max_"
                        f"{unit.lower()})"
                    )


def _check_gpus(cfg: dict[str, Any]) -> None:
    """Architectures served on several GPUs need an engine that splits them (vLLM; the native engine runs one GPU)."""
    for i, name in enumerate(cfg["architectures"]):
        arch = get_preset(name)  # a preset, or an architecture registered from its checkpoint
        problem = tensor_parallel_problem(arch)
        if problem:
            raise ConfigError(f"config key 'architectures[{i}]': value {name!r}: {problem}")
        if arch.gpus > 1 and "vllm" not in cfg["engines"]:
            raise ConfigError(
                f"config key 'architectures[{i}]': value {name!r} runs on gpus={arch.gpus} (tensor parallel), "
                f"which engines={cfg['engines']} cannot: the native engine runs on one GPU; accepted: add 'vllm' "
                "to engines, or an architecture with gpus=1")
    for i, name in enumerate(cfg["clear"]["architectures"]):
        if get_preset(name).gpus > 1:
            raise ConfigError(f"config key 'clear.architectures[{i}]': value {name!r} runs on "
                              f"gpus={get_preset(name).gpus}; CLEAR measures components on one GPU; accepted: an "
                              "architecture with gpus=1")


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
    # a measurement job's part of the config (MEASURE_KEYS) holds the weights but not the grid that names them
    _check_semantics(cfg, grid_given="architectures" in raw or "clear" in raw)
    cfg["levers"] = [str(Lever.parse(t)) for t in cfg["levers"]]  # one spelling: powercap:0300 -> powercap:300
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply overrides and validate it."""
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    raw.update(overrides or {})
    return validate_config(raw)


# Keys a measurement job depends on (the part of the config a job reads); a change to the grid alone reruns none.
MEASURE_KEYS = ("output_lengths", "measurement", "backend", "vllm", "allow_gpu_settings", "seed", "sim", "gpu",
                "cluster", "weights")


def config_hash(cfg: Mapping[str, Any]) -> str:
    """Short, stable hash of a validated config (recorded in every trace's metadata)."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


RUN_FILE = "run.json"


def results_folder(value: str, default: str, results: str) -> str:
    """A folder key's value with ``results/`` read as the run's results folder when it is the default.

    ``results_folder("results/traces", "results/traces", "out") == "out/traces"``; any other value is kept
    (without a trailing slash): a folder elsewhere is cached data, read as it is.
    """
    value = value.rstrip("/")
    return f"{results.rstrip('/')}/{default.split('/', 1)[1]}" if value == default else value


def logs_folder(results: str) -> str:
    """The jobs' log folder of a results folder: ``logs`` for the default ``results``, else ``<results>/logs``.

    Two results folders in one working directory keep their logs apart, as they keep their tables.
    """
    results = results.rstrip("/")
    return "logs" if results == "results" else f"{results}/logs"


def check_run_identity(results: str | Path, identity: Mapping[str, Any]) -> None:
    """Refuse a results folder that holds another config's outputs (its ``run.json`` differs).

    A run writes ``<results>/run.json`` (:func:`write_run_identity`) with the config files and the traces
    folder it was given; a later run with other ones would replace that run's tables, claims and figures
    without a word. A folder without the file (new, or from before this check) is accepted.
    """
    path = Path(results) / RUN_FILE
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text())
        keys = ("configfiles", "traces")
        same = {k: previous[k] for k in keys} == {k: identity[k] for k in keys}
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is unreadable, so which config wrote {results}/ is unknown; delete {path} to "
                          f"let this config take the folder over") from None
    if not same:
        own = [f for f in identity["configfiles"] if Path(f).name != "config.yaml"] or ["run"]
        stem = Path(own[0]).stem
        raise ConfigError(
            f"{results}/ holds the outputs of another run (config files {', '.join(previous['configfiles'])}; "
            f"traces {previous['traces']}), not of this one (config files {', '.join(identity['configfiles'])}; "
            f"traces {identity['traces']}); its tables, claims and figures would be replaced. Give this run its "
            f"own folder (config key results, e.g. --config results=results-{stem}), or delete {path} to let "
            "this run replace them")


def write_run_identity(results: str | Path, identity: Mapping[str, Any]) -> None:
    """Record which config files and traces the results folder belongs to (see :func:`check_run_identity`)."""
    path = Path(results) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(identity), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
