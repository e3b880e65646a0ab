"""phase-energy: per-phase GPU energy of LLM inference under power caps and SM clock locks."""

__version__ = "0.1.0"
