"""The measurement engines: the native one (``native``) and vLLM (``vllm``)."""

from __future__ import annotations

import os


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    """The value of the environment switch ``name``, one of ``choices`` (``default`` when unset or empty)."""
    value = os.environ.get(name) or default
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not accepted; expected one of {', '.join(choices)}")
    return value
