"""Scoring a model's own action probabilities, for exact evaluation (Kuhn exploitability).

The probability of an action is the model's probability of answering with that action
directly, ``\\boxed{[bet]}`` then end of turn (the format the warm start teaches),
renormalised over the legal actions. For models that reason before answering this is the
distribution of their direct answers, not of their full responses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spiral_agents.llm.prompts import PromptTemplate, token_ids


def answer_text(action: str) -> str:
    """The canonical direct answer for an action text."""
    return f"\\boxed{{{action}}}"


class ModelKuhnScorer:
    """An agent view of a causal LM that reports ``action_probabilities`` on finite games."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, template: PromptTemplate, actions: tuple[str, ...] = ("[check]", "[bet]", "[call]", "[fold]")) -> None:
        self.model, self.tokenizer, self.template, self.actions = model, tokenizer, template, actions
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.answers = [list(tokenizer(answer_text(a), add_special_tokens=False)["input_ids"]) + [end] for a in actions]

    @torch.no_grad()
    def action_probabilities(self, observation: dict[str, Any]) -> np.ndarray:
        legal = np.flatnonzero(observation["action_mask"])
        prompt = token_ids(self.template, [observation["text"]], self.tokenizer)[0]
        sequences = [prompt + self.answers[a] for a in legal]
        width = max(map(len, sequences))
        device = next(self.model.parameters()).device
        ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for i, sequence in enumerate(sequences):
            ids[i, : len(sequence)] = torch.tensor(sequence)
        attention = (torch.arange(width)[None, :] < torch.tensor([len(s) for s in sequences])[:, None]).long()
        logits = self.model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()
        logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None].to(device)).squeeze(-1).cpu()
        totals = [float(logp[i, len(prompt) - 1 : len(s) - 1].sum()) for i, s in enumerate(sequences)]
        scores = np.exp(np.array(totals) - max(totals))
        probabilities = np.zeros(len(self.actions))
        probabilities[legal] = scores / scores.sum()
        return probabilities

    def act(self, observation: dict[str, Any]) -> int:
        return int(np.argmax(self.action_probabilities(observation)))
