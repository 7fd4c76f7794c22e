"""Play a trained Stable-Baselines3 / sb3-contrib model as an agent (masked prediction)."""

from __future__ import annotations

from typing import Any

import numpy as np

from spiral_agents.base import Observation


class SB3Agent:
    """Wraps a saved (or in-memory) SB3 model trained on a game's Gymnasium view.

    The model sees the observation without its text, as in training with ``with_text=False``;
    a MaskablePPO model also gets the action mask.

    Args:
        model: a loaded model, or the path of a saved one.
        algorithm: class name to load ``model`` with when it is a path (default MaskablePPO).
        deterministic: take the most likely action instead of sampling.
    """

    name = "sb3"

    def __init__(
        self,
        game: str | None = None,
        seed: int | None = None,
        model: Any = None,
        algorithm: str = "MaskablePPO",
        deterministic: bool = True,
    ) -> None:
        if model is None:
            raise ValueError("SB3Agent needs model=<path or model>, e.g. sb3@model=ttt.zip")
        if isinstance(model, str):
            model = _algorithm(algorithm).load(model, device="cpu")
        self.model = model
        self.deterministic = deterministic
        self._maskable = hasattr(model, "policy") and "Maskable" in type(model).__name__

    def act(self, observation: Observation) -> int:
        features = {k: v for k, v in observation.items() if k != "text"}
        kwargs = {"action_masks": observation["action_mask"].astype(bool)} if self._maskable else {}
        action, _ = self.model.predict(features, deterministic=self.deterministic, **kwargs)
        return int(np.asarray(action).item())


def _algorithm(name: str) -> Any:
    import sb3_contrib
    import stable_baselines3

    for module in (sb3_contrib, stable_baselines3):
        if hasattr(module, name):
            return getattr(module, name)
    raise ValueError(f"unknown stable-baselines3 algorithm {name!r}")
