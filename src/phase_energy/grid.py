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
LEVER_KINDS = ("default", "powercap", "smclock")


class LeverError(ValueError):
    """A lever that is not ``default``, ``powercap:<W>`` or ``smclock:<MHz>``."""


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
            raise LeverError(f"lever {text!r} is not accepted; expected 'default', 'powercap:<watts>' or "
                             "'smclock:<MHz>' with integer numbers (e.g. powercap:400, smclock:1410)")
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
        "lever": r"default|powercap-\d+|smclock-\d+", "rep": r"\d+"}

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
