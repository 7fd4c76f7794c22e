"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny offline Qwen3 (tokenizer + random weights), built once per run."""
    from spiral_agents.llm.tiny import ensure_tiny_qwen3

    return ensure_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3")
