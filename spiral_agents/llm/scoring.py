"""A model's own action probabilities on finite games, for exact evaluation (Kuhn exploitability).

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

KUHN_ACTIONS = ("[check]", "[bet]", "[call]", "[fold]")
END_OF_TURN = "<|im_end|>"


def answer_text(action: str) -> str:
    """The canonical direct answer for an action text."""
    return f"\\boxed{{{action}}}"


def _end_of_turn(tokenizer: Any) -> int:
    """ChatML's end-of-turn token where the vocabulary has it, else the tokenizer's EOS."""
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end is None or end == tokenizer.unk_token_id:
        end = tokenizer.eos_token_id
    if end is None:
        raise ValueError(f"the tokenizer has neither {END_OF_TURN} nor an EOS token")
    return int(end)


class ActionScorer:
    """An agent view of a causal LM that reports ``action_probabilities`` on a finite game
    whose action texts are ``actions`` (Kuhn Poker's by default)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        template: PromptTemplate,
        actions: tuple[str, ...] = KUHN_ACTIONS,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.template, self.actions = template, actions
        end = _end_of_turn(tokenizer)
        self.answers = [
            [*tokenizer(answer_text(a), add_special_tokens=False)["input_ids"], end]
            for a in actions
        ]

    def action_probabilities(self, observation: dict[str, Any]) -> np.ndarray:
        mask = observation["action_mask"]
        if len(mask) != len(self.actions):
            raise ValueError(
                f"the observation has {len(mask)} actions, the scorer {len(self.actions)}"
            )
        legal = np.flatnonzero(mask)
        prompt = token_ids(self.template, [observation["text"]], self.tokenizer)[0]
        totals = self.answer_logprobs(prompt, [self.answers[a] for a in legal])
        scores = np.exp(np.array(totals) - max(totals))
        probabilities = np.zeros(len(self.actions))
        probabilities[legal] = scores / scores.sum()
        return probabilities

    @torch.no_grad()
    def answer_logprobs(self, prompt: list[int], answers: list[list[int]]) -> list[float]:
        """The log-probability of each answer's tokens after ``prompt``."""
        sequences = [prompt + answer for answer in answers]
        width = max(map(len, sequences))
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(sequences), width), pad if pad is not None else 0, dtype=torch.long)
        for i, sequence in enumerate(sequences):
            ids[i, : len(sequence)] = torch.tensor(sequence)
        lengths = torch.tensor([len(s) for s in sequences])
        attention = (torch.arange(width)[None, :] < lengths[:, None]).long()
        logits = self.model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
        logp = logits.float()[:, :-1].log_softmax(-1)
        logp = logp.gather(2, ids[:, 1:, None].to(device)).squeeze(-1).cpu()
        start = len(prompt) - 1
        return [float(logp[i, start : len(s) - 1].sum()) for i, s in enumerate(sequences)]

    def act(self, observation: dict[str, Any]) -> int:
        return int(np.argmax(self.action_probabilities(observation)))


class VLLMActionScorer(ActionScorer):
    """:class:`ActionScorer` on an in-process ``vllm.LLM``, from its prompt log-probs."""

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        template: PromptTemplate,
        actions: tuple[str, ...] = KUHN_ACTIONS,
    ) -> None:
        super().__init__(None, tokenizer, template, actions)  # type: ignore[arg-type]
        self.llm = llm

    def answer_logprobs(self, prompt: list[int], answers: list[list[int]]) -> list[float]:
        import vllm

        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        requests = [{"prompt_token_ids": prompt + answer} for answer in answers]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        totals = []
        for answer, output in zip(answers, outputs):
            steps = output.prompt_logprobs[len(prompt) :]
            tokens = output.prompt_token_ids[len(prompt) :]
            totals.append(sum(step[token].logprob for step, token in zip(steps, tokens)))
        return totals
