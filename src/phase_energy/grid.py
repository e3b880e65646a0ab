"""The experiment grid: levers, grid points and the trace folder each point owns.

A grid point is one measurement job: engine x architecture x batch x context x lever x repetition. Its
folder (``engine~E/arch~A/bs~B/ctx~C/lever~L/rep~R``), the Snakemake wildcards that name it, the glob that
finds it and the parsing of a folder back into a point all live here, so no other module writes or splits
that path. CLEAR's points (architecture x batch x repetition) are :class:`ClearPoint`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

ENGINES = ("native", "vllm")
LEVER_KINDS = ("default", "powercap", "smclock", "phase")
PHASES = ("prefill", "decode")  # the phases a phase lever sets apart, in the order a request runs them
_STATIC_SLUG = r"default|powercap-\d+|smclock-\d+"
PHASE_FORM = "'phase:prefill=<lever>,decode=<lever>' (each 'default', 'powercap:<W>' or 'smclock:<MHz>')"


class LeverError(ValueError):
    """A lever that is not ``default``, ``powercap:<W>``, ``smclock:<MHz>`` or a phase lever of two of them."""


@dataclass(frozen=True)
class Lever:
    """One GPU setting of the grid: ``default``, ``powercap`` (watts), ``smclock`` (MHz), or ``phase``.

    A phase lever holds one static lever per phase (``prefill``, ``decode``): the job switches from one to
    the other at the phase boundary, e.g. ``phase:prefill=default,decode=smclock:1410``.
    """

    kind: str
    value: int | None = None
    prefill: Lever | None = None
    decode: Lever | None = None

    @classmethod
    def parse(cls, text: str) -> Lever:
        """Parse ``default``, ``powercap:<W>``, ``smclock:<MHz>`` or ``phase:prefill=<lever>,decode=<lever>``."""
        if text == "default":
            return cls("default")
        if text.startswith("phase:"):
            return cls._parse_phase(text)
        kind, _, value = text.partition(":")
        if kind not in ("powercap", "smclock") or not value.isdigit():
            raise LeverError(f"lever {text!r} is not accepted; expected 'default', 'powercap:<watts>' or "
                             "'smclock:<MHz>' with integer numbers (e.g. powercap:400, smclock:1410), or "
                             f"{PHASE_FORM}")
        return cls(kind, int(value))

    @classmethod
    def _parse_phase(cls, text: str) -> Lever:
        parts: dict[str, Lever] = {}
        for item in text.removeprefix("phase:").split(","):
            name, eq, sub = item.partition("=")
            if not eq or name not in PHASES or name in parts:
                raise LeverError(f"phase lever {text!r} is not accepted: part {item!r} is not '<phase>=<lever>' "
                                 f"with phase prefill or decode, each once; expected {PHASE_FORM}, e.g. "
                                 "phase:prefill=default,decode=smclock:1410")
            if sub.startswith("phase:"):
                raise LeverError(f"phase lever {text!r}: the {name} lever {sub!r} is a phase lever itself; "
                                 "expected 'default', 'powercap:<W>' or 'smclock:<MHz>'")
            try:
                parts[name] = cls.parse(sub)
            except LeverError as e:
                raise LeverError(f"phase lever {text!r}: the {name} lever {sub!r} is not accepted; expected "
                                 "'default', 'powercap:<W>' or 'smclock:<MHz>' with integer numbers") from e
        missing = [p for p in PHASES if p not in parts]
        if missing:
            raise LeverError(f"phase lever {text!r} names no {' and no '.join(missing)} lever; expected {PHASE_FORM}")
        if parts["prefill"] == parts["decode"]:
            raise LeverError(f"phase lever {text!r} sets {parts['prefill']} in both phases: that is the static "
                             f"lever {str(parts['prefill'])!r}; list it as such")
        return cls("phase", None, parts["prefill"], parts["decode"])

    def __str__(self) -> str:
        if self.kind == "phase":
            return f"phase:prefill={self.prefill},decode={self.decode}"
        return self.kind if self.value is None else f"{self.kind}:{self.value}"

    @property
    def slug(self) -> str:
        """File-name form: ``powercap-400``; ``phase_prefill.default_decode.smclock-1410``."""
        if self.kind == "phase":
            assert self.prefill is not None and self.decode is not None
            return f"phase_prefill.{self.prefill.slug}_decode.{self.decode.slug}"
        return self.kind if self.value is None else f"{self.kind}-{self.value}"

    @classmethod
    def from_slug(cls, slug: str) -> Lever:
        """Inverse of :attr:`slug`."""
        if slug.startswith("phase_"):
            parts = dict(part.partition(".")[::2] for part in slug.removeprefix("phase_").split("_"))
            if set(parts) != set(PHASES):
                raise LeverError(f"lever folder name {slug!r} is not accepted; expected "
                                 "phase_prefill.<lever>_decode.<lever>, e.g. phase_prefill.default_decode.smclock-1410")
            return cls.parse("phase:" + ",".join(f"{p}={cls.from_slug(parts[p])}" for p in PHASES))
        return cls.parse(slug.replace("-", ":", 1))

    def for_phase(self, phase: str) -> Lever:
        """The static lever that holds during ``phase`` (a static lever holds in both)."""
        if self.kind != "phase":
            return self
        if phase not in PHASES:
            raise LeverError(f"phase {phase!r} is not accepted; expected one of {', '.join(PHASES)}")
        sub = self.prefill if phase == "prefill" else self.decode
        assert sub is not None
        return sub

    @property
    def static_levers(self) -> tuple[Lever, ...]:
        """The static levers this one sets: itself, or a phase lever's two."""
        return (self.for_phase("prefill"), self.for_phase("decode")) if self.kind == "phase" else (self,)


@dataclass(frozen=True)
class GridPoint:
    """One measurement job: engine x architecture x batch x context x lever (x repetition)."""

    arch: str
    batch: int
    context: int
    lever: str
    rep: int = 0
    engine: str = "native"

    # the folder of a point with Snakemake's wildcards; its glob; the wildcards' constraints
    PATTERN: ClassVar[str] = "engine~{engine}/arch~{arch}/bs~{bs}/ctx~{ctx}/lever~{lever}/rep~{rep}"
    GLOB: ClassVar[str] = "engine~*/arch~*/bs~*/ctx~*/lever~*/rep~*"
    WILDCARDS: ClassVar[Mapping[str, str]] = {
        "engine": "|".join(ENGINES), "arch": r"[a-z0-9][a-z0-9.\-]*", "bs": r"\d+", "ctx": r"\d+",
        "lever": rf"{_STATIC_SLUG}|phase_prefill\.(?:{_STATIC_SLUG})_decode\.(?:{_STATIC_SLUG})", "rep": r"\d+"}

    @property
    def setting(self) -> Lever:
        """The point's lever, parsed."""
        return Lever.parse(self.lever)

    @property
    def path(self) -> str:
        """Relative folder of the job's trace, ``key~value`` style."""
        return self.PATTERN.format(engine=self.engine, arch=self.arch, bs=self.batch, ctx=self.context,
                                   lever=self.setting.slug, rep=self.rep)

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
            raise ValueError(f"trace folder {str(path)!r} lacks the parts {missing} of {cls.PATTERN}")
        return cls.from_wildcards(parts)


@dataclass(frozen=True)
class ClearPoint:
    """One CLEAR job: the components of an architecture at one batch (both phases), one repetition."""

    arch: str
    batch: int
    rep: int = 0

    PATTERN: ClassVar[str] = "arch~{arch}/bs~{bs}/rep~{rep}"

    @property
    def path(self) -> str:
        """Relative folder of the job's trace."""
        return self.PATTERN.format(arch=self.arch, bs=self.batch, rep=self.rep)

    def as_grid_point(self, context: int) -> GridPoint:
        """The grid point the CLEAR job's seed derives from (its model at the CLEAR context)."""
        return GridPoint(self.arch, self.batch, context, "default", self.rep)


def expand_grid(cfg: Mapping[str, Any]) -> Iterator[GridPoint]:
    """Every point of the grid, in a stable order."""
    for engine in cfg["engines"]:
        for arch in cfg["architectures"]:
            for bs in cfg["batch_sizes"]:
                for ctx in cfg["contexts"]:
                    for lever in cfg["levers"]:
                        for rep in range(cfg["repetitions"]):
                            yield GridPoint(arch, bs, ctx, lever, rep, engine)


def clear_points(cfg: Mapping[str, Any]) -> list[ClearPoint]:
    """Every CLEAR job of the config (empty when CLEAR is off)."""
    c = cfg["clear"]
    return [ClearPoint(a, b, r) for a in c["architectures"] for b in c["batch_sizes"] for r in range(c["repetitions"])]
