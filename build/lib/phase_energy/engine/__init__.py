"""The native engine: models of the four paradigms with static caches and captured decode steps."""

from .runner import EngineWorkload
from .transformer import Transformer, init_random_

__all__ = ["EngineWorkload", "Transformer", "init_random_"]
