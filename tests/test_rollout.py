"""The rollout engine, with a scripted backend (exact, fast) and the real tiny Qwen3."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from spiral_agents import RandomAgent
from spiral_agents.arena import summarize
from spiral_agents.llm.backend import Generation, SamplingConfig, error_generations
from spiral_agents.llm.prompts import BaseModelTemplate
from spiral_agents.llm.rollout import (
    MAX_FAILED_CALLS_IN_A_ROW,
    BackendFailure,
    LLMPolicy,
    Matchup,
    RolloutEngine,
    load_samples,
    save_samples,
)


class ByteTokenizer:
    """Token id = byte value; enough for prompts and decoding checks."""

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict:
        return {"input_ids": [list(text.encode()) for text in texts]}

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode()


class ScriptedBackend:
    """Answers with a random legal move read from the prompt (seeded per request), or with
    a broken answer or a failed request on request; records every call."""

    def __init__(self, broken_every: int = 0, failing_every: int = 0) -> None:
        self.tokenizer = ByteTokenizer()
        self.calls: list[int] = []
        self.broken_every = broken_every
        self.failing_every = failing_every

    def generate(self, prompts, sampling: SamplingConfig, seeds=None) -> list[list[Generation]]:
        self.calls.append(len(prompts))
        out = []
        for prompt, seed in zip(prompts, seeds):
            text = self.tokenizer.decode(prompt)
            rng = np.random.default_rng(seed)
            legal = re.findall(r"\[[^\]]+\]", text.rsplit("Your legal moves:", 1)[-1].split("\n")[0])
            if "Your legal moves:" not in text:  # free-text game: say something valid
                legal = ["[Deny]"] if "Standing offer to you" in text else ["Hello there."]
            move = legal[int(rng.integers(len(legal)))]
            response = f"<think>thinking</think> The answer is \\boxed{{{move}}}"
            finish = "stop"
            if self.broken_every and seed % self.broken_every == 0:
                response, finish = "I keep thinking and thinking", "length"
            if self.failing_every and seed % self.failing_every == 0:
                out.append(error_generations(1, "HTTP 503 Service Unavailable"))
                continue
            ids = list(response.encode())
            out.append([Generation(response, ids, [-0.5] * len(ids), finish)])
        return out


def policy(backend=None, name="scripted") -> LLMPolicy:
    return LLMPolicy(backend or ScriptedBackend(), BaseModelTemplate(), SamplingConfig(), name)


MIX = ["TicTacToe-v0", "KuhnPoker-v1", "SimpleNegotiation-v1"]


def test_self_play_batches_every_waiting_game_in_one_call() -> None:
    llm = policy()
    engine = RolloutEngine([Matchup(g, (llm, llm)) for g in MIX], concurrency=16, seed=0)
    rollout = engine.run(games=16)
    assert len(rollout.games) == 16
    # the first step sends all 16 games at once, whichever seat each waits on
    assert llm.backend.calls[0] == 16
    assert engine.generation_calls == len(llm.backend.calls)
    assert sum(llm.backend.calls) == len(rollout.samples)


def test_samples_decode_back_and_rewards_sit_on_the_right_role() -> None:
    llm = policy()
    rollout = RolloutEngine([Matchup(g, (llm, llm)) for g in MIX], concurrency=8, seed=1).run(games=24)
    decode = llm.backend.tokenizer.decode
    by_episode = {}
    for sample in rollout.samples:
        assert decode(sample.prompt_token_ids).startswith("<|im_start|>user\n")
        assert decode(sample.response_token_ids) == sample.text
        assert len(sample.logprobs) == len(sample.response_token_ids)
        by_episode.setdefault(sample.episode, []).append(sample)
    records = {r.seed: r for r in rollout.games}
    assert len(by_episode) == 24
    for record in rollout.games:
        assert sum(record.rewards.values()) == pytest.approx(0.0)
    for samples in by_episode.values():
        seats = {s.seat: s.reward for s in samples}
        for seat, reward in seats.items():
            assert all(s.reward == reward for s in samples if s.seat == seat)
        if len(seats) == 2:
            assert sum(seats.values()) == pytest.approx(0.0)
    assert len(records) == 24


def test_seeded_runs_reproduce_exactly() -> None:
    def run(concurrency: int):
        llm = policy()
        engine = RolloutEngine([Matchup(g, (llm, llm)) for g in MIX], concurrency=concurrency, seed=7)
        return engine.run(games=12)

    a, b = run(4), run(4)
    assert [s.text for s in a.samples] == [s.text for s in b.samples]
    assert [r.moves for r in a.games] == [r.moves for r in b.games]


def test_llm_against_a_builtin_agent_alternates_seats_and_feeds_the_arena() -> None:
    llm = policy()
    engine = RolloutEngine([Matchup("TicTacToe-v0", (llm, RandomAgent(seed=0)))], concurrency=8)
    rollout = engine.run(games=20)
    assert {s.seat for s in rollout.samples} == {"player_0", "player_1"}
    assert all(s.policy == "scripted" for s in rollout.samples)
    (result,) = summarize(rollout.games)
    assert (result.a, result.b, result.games) == ("scripted", "random", 20)
    assert result.a_invalid == 0


def test_no_answer_is_an_invalid_move_that_ends_only_its_game() -> None:
    llm = policy(ScriptedBackend(broken_every=3))
    rollout = RolloutEngine([Matchup("TicTacToe-v0", (llm, llm))], concurrency=8, seed=3).run(games=30)
    broken = [s for s in rollout.samples if s.finish_reason == "length"]
    assert broken and all(s.invalid and "cut off" in s.invalid_reason for s in broken)
    assert all(s.reward == -1.0 for s in broken)
    assert len(rollout.games) == 30


def test_failed_request_forfeits_only_its_game_and_is_recorded() -> None:
    llm = policy(ScriptedBackend(failing_every=7))
    rollout = RolloutEngine([Matchup("TicTacToe-v0", (llm, llm))], concurrency=8, seed=3).run(games=30)
    assert len(rollout.games) == 30
    failed = [r for r in rollout.games if r.error]
    assert 0 < len(failed) < 30
    for record in failed:
        assert record.ended_by == "forfeit" and "HTTP 503" in record.error
        assert "could not be queried" in record.error
        # the failed request is not a move: the board holds only the moves made before it
        assert not any(m["invalid"] for m in record.moves)
    errors = [s for s in rollout.samples if s.finish_reason == "error"]
    assert len(errors) == len(failed)
    assert all(s.response_token_ids == [] and s.reward == -1.0 for s in errors)
    clean = [r for r in rollout.games if not r.error]
    assert all(r.ended_by != "forfeit" for r in clean)


class FailingCalls(ScriptedBackend):
    """A scripted backend whose calls numbered in ``failing`` go wrong in the way given."""

    def __init__(self, failing: set[int], how: str = "raise") -> None:
        super().__init__()
        self.failing = failing
        self.how = how

    def generate(self, prompts, sampling: SamplingConfig, seeds=None) -> list[list[Generation]]:
        outputs = super().generate(prompts, sampling, seeds)
        if len(self.calls) not in self.failing:
            return outputs
        if self.how == "raise":
            raise RuntimeError("engine hiccup")
        if self.how == "short":
            return outputs[:-1]
        return [["not a generation"] for _ in prompts]


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("raise", "RuntimeError: engine hiccup"),
        ("short", "TypeError: generate returned 7 outputs for 8 prompts"),
        ("junk", "TypeError: output 0 of generate holds no Generation with text"),
    ],
)
def test_a_failed_backend_call_voids_only_its_games(how: str, says: str) -> None:
    llm = policy(FailingCalls({2}, how))
    engine = RolloutEngine([Matchup("TicTacToe-v0", (llm, llm))], concurrency=8, seed=3)
    rollout = engine.run(games=12)
    assert len(rollout.games) == 12
    failed = [r for r in rollout.games if r.error]
    assert len(failed) == llm.backend.calls[1] == 8  # every game of the second call
    for record in failed:
        assert record.ended_by == "forfeit"
        assert f"could not be queried: the backend call failed: {says}" in record.error
    errors = [s for s in rollout.samples if s.finish_reason == "error"]
    assert len(errors) == 8 and all(s.response_token_ids == [] for s in errors)
    assert all(not r.error for r in rollout.games if r.seed not in {f.seed for f in failed})


def test_a_backend_that_keeps_failing_stops_the_run() -> None:
    llm = policy(FailingCalls({2, 4, 5, 6, 7, 8}))
    engine = RolloutEngine([Matchup("TicTacToe-v0", (llm, llm))], concurrency=4, seed=3)
    with pytest.raises(BackendFailure, match="failed 3 generate calls in a row") as info:
        engine.run(games=40)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "engine hiccup" in str(info.value)
    # call 2 failed alone; calls 4, 5 and 6 failed in a row
    assert len(llm.backend.calls) == 3 + MAX_FAILED_CALLS_IN_A_ROW == 6


def test_turn_target_finishes_live_games() -> None:
    llm = policy()
    rollout = RolloutEngine([Matchup("KuhnPoker-v1", (llm, llm))], concurrency=4).run(turns=50)
    assert len(rollout.samples) >= 50
    assert all(s.reward is not None for s in rollout.samples)


def test_crashing_agent_forfeits_its_game_only() -> None:
    def crash(observation):
        raise RuntimeError("agent bug")

    llm = policy()
    rollout = RolloutEngine([Matchup("TicTacToe-v0", (llm, crash))], concurrency=4).run(games=6)
    assert len(rollout.games) == 6
    assert all("agent bug" in r.error for r in rollout.games)
    assert all(s.reward == 1.0 for s in rollout.samples)


def test_weights_and_bad_arguments() -> None:
    llm = policy()
    engine = RolloutEngine(
        [Matchup("TicTacToe-v0", (llm, llm), weight=3), Matchup("KuhnPoker-v1", (llm, llm), weight=1)],
        concurrency=8,
    )
    games = engine.run(games=200).games
    share = sum(g.game == "TicTacToe-v0" for g in games) / len(games)
    assert 0.65 < share < 0.85
    with pytest.raises(ValueError):
        RolloutEngine([])
    with pytest.raises(KeyError):
        RolloutEngine([Matchup("Chess-v0", (llm, llm))])
    with pytest.raises(ValueError):
        engine.run()


def test_samples_jsonl_round_trip(tmp_path) -> None:
    llm = policy()
    rollout = RolloutEngine([Matchup("SimpleNegotiation-v1", (llm, llm))], concurrency=2).run(games=2)
    save_samples(rollout.samples, tmp_path / "s.jsonl")
    assert load_samples(tmp_path / "s.jsonl") == rollout.samples


def test_llm_agent_and_evaluate_through_the_engine() -> None:
    from spiral_agents.arena import play_game
    from spiral_agents.llm.agent import LLMAgent, evaluate

    llm = policy()
    agent = LLMAgent(llm)
    record = play_game("TicTacToe-v0", {"player_0": agent, "player_1": RandomAgent(seed=1)}, seed=0)
    assert record.error is None and "\\boxed" in agent.last_generation.text
    records = evaluate(llm, ["random", "minimax", "kuhn-nash"], ["TicTacToe-v0", "KuhnPoker-v1"], 10)
    rows = {(r.game, r.b): r for r in summarize(records)}
    assert set(rows) == {("TicTacToe-v0", "random"), ("TicTacToe-v0", "minimax"), ("KuhnPoker-v1", "random"), ("KuhnPoker-v1", "kuhn-nash")}
    assert rows[("TicTacToe-v0", "minimax")].wins == 0
    assert all(r.games == 10 for r in rows.values())


def test_text_moves_are_recorded_once_and_capped() -> None:
    from spiral_agents.arena import replay
    from spiral_agents.records import MAX_MOVE_CHARS

    long_text = "[Deny] " + "x" * MAX_MOVE_CHARS

    def talker(observation):
        return long_text

    rollout = RolloutEngine([Matchup("SimpleNegotiation-v1", (policy(), talker))], concurrency=2).run(games=2)
    texts = [m for r in rollout.games for m in r.moves if isinstance(m["action"], str)]
    assert texts and all("action_text" not in m for m in texts)
    assert all(len(m["action"]) <= MAX_MOVE_CHARS for m in texts)
    assert any(m.get("action_chars") == len(long_text) and m["invalid"] for m in texts)
    for record in rollout.games:
        replay(record)


def test_every_adapter_keyword_reaches_the_env_not_the_game() -> None:
    """max_cycles is the adapter's (as render_mode, invalid_move, max_turns): the rollout
    engine passes it to the env and leaves it out of the game's rules."""
    engine = RolloutEngine([Matchup("TicTacToe-v0", ("random", "random"), env_kwargs={"max_cycles": 1})])
    record = engine.run(games=1).games[0]
    assert len(record.moves) == 2 and record.ended_by != "game over"
