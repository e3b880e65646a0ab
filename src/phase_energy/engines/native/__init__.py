"""The native engine: models of the four paradigms with static caches and captured decode steps."""

from phase_energy.engines.native.runner import EngineWorkload
from phase_energy.engines.native.transformer import Transformer, init_random_

__all__ = ["EngineWorkload", "Transformer", "init_random_"]
