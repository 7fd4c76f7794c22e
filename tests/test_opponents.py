"""Opponents and populations: mixes, the draw, the pool, Elo, average policies, training against
frozen opponents, and the pool across a checkpoint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spiral_agents.exact import (
    DECISIONS,
    _opener_value,
    _pure_strategies,
    decode_policy,
    encode_policy,
    kuhn_mixture,
    kuhn_nash_conv,
)
from spiral_agents.llm.rollout import Matchup, RolloutEngine
from spiral_envs.games.kuhn_poker import BET, CALL, CHECK, FOLD
from spiral_train.checkpoint import CheckpointError, latest_checkpoint
from spiral_train.config import ConfigError, load_config
from spiral_train.population import (
    LEARNER,
    POPULATION,
    Population,
    Ratings,
    Snapshot,
    kind_of,
    opponent_mix,
    opponent_plan,
)
from spiral_train.rae import RoleBaselines
from tests.test_train_run import tiny_overrides

KUHN = '{id = "KuhnPoker-v1", env_kwargs = {rounds = 1}'


def kuhn_game(opponent: str) -> str:
    return f"[{KUHN}, opponent = {opponent}}}]"


# --- mixes and the draw ---------------------------------------------------------------------


def test_a_mix_is_normalised_and_needs_a_positive_weight() -> None:
    assert opponent_mix("self") == {"self": 1.0}
    assert opponent_mix({"self": 3, "random": 1, "initial": 0}) == {"self": 0.75, "random": 0.25}
    with pytest.raises(ValueError, match="positive"):
        opponent_mix({"self": 0.0})
    with pytest.raises(ValueError, match=">= 0"):
        opponent_mix({"self": -1.0, "random": 2.0})


def test_bad_opponents_are_config_errors(tiny_qwen3: Path, tmp_path: Path) -> None:
    for opponent, expected in (
        ('"no-such-agent"', "not self, initial, population, a model folder"),
        ('"minimax"', "plays only"),
        ('{self = 0.0}', "positive weight"),
        ('{self = -1.0, random = 1.0}', ">= 0"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_config(None, tiny_overrides(tiny_qwen3, tmp_path, games=kuhn_game(opponent)))


def test_a_model_folder_opponent_is_named_by_its_absolute_path(tiny_qwen3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_qwen3.parent)
    config = load_config(None, tiny_overrides(tiny_qwen3, tmp_path, games=kuhn_game(f'{{self = 1.0, "{tiny_qwen3.name}" = 1.0}}')))
    assert config.games[0].mix == {"self": 0.5, str(tiny_qwen3.resolve()): 0.5}


def test_opponent_draw_frequencies_match_the_configured_weights() -> None:
    """Each configured opponent (and each pool member, by its sampling weight) sits opposite in
    its share of the games the rollout engine draws."""
    mixes = [{"self": 0.5, "random": 0.3, POPULATION: 0.2}]
    plan = opponent_plan(mixes, [1.0], {"snapshot-000000": 0.25, "snapshot-000005": 0.75})
    expected = {"self": 0.5, "random": 0.3, "snapshot-000000": 0.05, "snapshot-000005": 0.15}
    assert {e.name: e.weight for e in plan} == pytest.approx(expected)
    stand_in = {"self": "random@seed=1", "random": "random@seed=2", "snapshot-000000": "random@seed=3", "snapshot-000005": "random@seed=4"}
    matchups = [Matchup("KuhnPoker-v1", ("kuhn-nash", stand_in[e.name]), e.weight, {"rounds": 1}) for e in plan]
    games = 4000
    records = RolloutEngine(matchups, concurrency=64, seed=[7, 0, 3]).run(games=games).games
    seen = Counter(record.pairing[1] for record in records)
    for name, share in expected.items():
        count = seen[stand_in[name]]
        assert abs(count - games * share) < 4 * np.sqrt(games * share * (1 - share)), (name, count)
    seats = Counter(record.agents["player_0"] == "kuhn-nash" for record in records)
    assert seats[True] == seats[False] == games // 2  # seats alternate


def test_opponent_kinds_and_their_baselines() -> None:
    assert [kind_of(n) for n in (LEARNER, "snapshot-000010", "initial", "random")] == ["self", POPULATION, "initial", "random"]
    baselines = RoleBaselines(alpha=0.5)
    assert baselines.observe("g", 0, 1.0, "random") == 1.0
    assert baselines.baseline("g", 0, "random") == 0.5 and baselines.baseline("g", 0) == 0.0
    restored = RoleBaselines()
    restored.load_state_dict({"alpha": 0.5, "update_first": False, "values": [["g", 0, 0.25], ["g", 1, 0.5, "random"]]})
    assert restored.values == {("g", 0, "self"): 0.25, ("g", 1, "random"): 0.5}  # the old format is self-play's


# --- the pool and the ratings ---------------------------------------------------------------


def snapshot(step: int) -> Snapshot:
    return Snapshot(f"snapshot-{step:06d}", step, "0" * 64)


def test_fifo_pool_replaces_the_oldest_and_keeps_its_history() -> None:
    pool = Population(size=3, every=2)
    rng = np.random.default_rng(0)
    assert [pool.due(s) for s in range(5)] == [True, False, True, False, True]
    outs = [pool.add(snapshot(step), rng) for step in range(0, 10, 2)]
    assert [o.step if o else None for o in outs] == [None, None, None, 0, 2]
    assert [m.step for m in pool.members] == [4, 6, 8]
    assert [s.step for s in pool.history] == [0, 2, 4, 6, 8]


def test_reservoir_pool_keeps_a_uniform_sample_of_all_snapshots() -> None:
    kept = Counter()
    for trial in range(2000):
        pool = Population(size=2, every=1, replacement="reservoir")
        rng = np.random.default_rng(trial)
        for step in range(6):
            pool.add(snapshot(step), rng)
        kept.update(m.step for m in pool.members)
        assert pool.taken == 6 and len(pool.members) == 2
    for step in range(6):  # each of 6 snapshots is in a pool of 2 with probability 1/3
        assert abs(kept[step] / 2000 - 1 / 3) < 0.05, kept


def test_sampling_weights_uniform_latest_and_by_rating() -> None:
    ratings = Ratings(values={LEARNER: 1000.0, "snapshot-000000": 800.0, "snapshot-000001": 1000.0})
    members = [snapshot(0), snapshot(1)]
    assert Population(2, 1, sampling="uniform", members=members).weights(ratings) == {"snapshot-000000": 0.5, "snapshot-000001": 0.5}
    latest = Population(2, 1, sampling="latest", members=members).weights(ratings)
    assert latest == pytest.approx({"snapshot-000000": 1 / 3, "snapshot-000001": 2 / 3})
    rated = Population(2, 1, sampling="rating", members=members, power=2.0, floor=0.0).weights(ratings)
    p_weak = 1 / (1 + 10 ** (-200 / 400))  # the learner beats the weaker snapshot more often
    raw = [(1 - p_weak) ** 2, 0.5**2]
    assert rated == pytest.approx({"snapshot-000000": raw[0] / sum(raw), "snapshot-000001": raw[1] / sum(raw)})
    assert rated["snapshot-000001"] > rated["snapshot-000000"]  # harder opponents more often


def test_elo_arithmetic() -> None:
    ratings = Ratings(k=16.0)
    ratings.update("random", 1.0)  # equal ratings, a win: +K/2
    assert ratings.values == {LEARNER: 1008.0, "random": 992.0}
    ratings.update("random", 0.0)  # a draw against a weaker player loses points
    expected = 0.5 - 1 / (1 + 10 ** (-16 / 400))
    assert ratings.rating(LEARNER) == pytest.approx(1008.0 + 16 * expected)
    ratings.add("snapshot-000003")  # a new snapshot is the learner as it is now
    assert ratings.rating("snapshot-000003") == ratings.rating(LEARNER)
    restored = Ratings()
    restored.load_state_dict(ratings.state_dict())
    assert restored == ratings


# --- average policies -------------------------------------------------------------------------


def pure(choices: dict[tuple[bool, tuple[int, ...]], int]) -> dict:
    """A policy taking ``choices[(opener, betting)]`` at every card."""
    return {(acts, card, h): np.eye(4)[choices[(acts, h)]] for card in range(3) for acts, h in DECISIONS}


BETTOR = pure({(True, ()): BET, (False, (CHECK,)): BET, (False, (BET,)): CALL, (True, (CHECK, BET)): CALL})
CHECKER = pure({(True, ()): CHECK, (False, (CHECK,)): CHECK, (False, (BET,)): FOLD, (True, (CHECK, BET)): FOLD})


def test_the_average_of_two_policies_weights_by_their_own_reach() -> None:
    mixed = kuhn_mixture([BETTOR, CHECKER])
    for card in range(3):
        assert mixed[(True, card, ())] == pytest.approx(np.eye(4)[CHECK] / 2 + np.eye(4)[BET] / 2)
        # only the checker checks, so only its answer to a bet after a check counts
        assert mixed[(True, card, (CHECK, BET))] == pytest.approx(np.eye(4)[FOLD])
        assert mixed[(False, card, (BET,))] == pytest.approx(np.eye(4)[CALL] / 2 + np.eye(4)[FOLD] / 2)


def test_exploitability_of_an_average_against_a_hand_computation() -> None:
    """Drawing one policy per hand is a mixed strategy: against every pure strategy of the other
    seat it earns the mean of the two policies' values, so NashConv of the average is the best
    responses' gain over those means, computed here from the two policies alone."""
    mixed = kuhn_mixture([BETTOR, CHECKER])

    def value(opener_policy: dict, responder_policy: dict) -> float:
        return _opener_value(lambda i: opener_policy[i] if i[0] else responder_policy[i])

    by_hand = 0.0
    for opener in (True, False):
        sign = 1 if opener else -1  # the best response sits in this seat, the two policies in the other
        best = max(
            sign * sum(value(s, p) if opener else value(p, s) for p in (BETTOR, CHECKER)) / 2
            for s in _pure_strategies(opener)
        )
        by_hand += best  # the mixture against itself is worth 0 to the two seats together
    assert kuhn_nash_conv(mixed) == pytest.approx(by_hand)
    assert kuhn_nash_conv(mixed) <= (kuhn_nash_conv(BETTOR) + kuhn_nash_conv(CHECKER)) / 2  # convex
    plain_mean = {i: (BETTOR[i] + CHECKER[i]) / 2 for i in BETTOR}  # what reach weighting corrects
    assert kuhn_nash_conv(plain_mean) != pytest.approx(by_hand)


@given(st.lists(st.floats(0.01, 0.99), min_size=12, max_size=12))
def test_encoded_policies_round_trip(probabilities: list[float]) -> None:
    policy = {}
    for p, (acts, card, h) in zip(probabilities, [(a, c, h) for c in range(3) for a, h in DECISIONS]):
        first, second = (CHECK, BET) if h in ((), (CHECK,)) else (CALL, FOLD)
        policy[(acts, card, h)] = p * np.eye(4)[first] + (1 - p) * np.eye(4)[second]
    decoded = decode_policy(json.loads(json.dumps(encode_policy(policy))))
    assert all(np.allclose(decoded[k], policy[k]) for k in policy)
    broken = encode_policy(policy)
    broken[next(iter(broken))] = [0.9, 0.9, 0.0, 0.0]
    with pytest.raises(ValueError, match="summing to 1"):
        decode_policy(broken)


# --- training against opponents ---------------------------------------------------------------


def opponent_run(model: Path, output: Path, opponent: str, **extra: object) -> list[str]:
    return tiny_overrides(model, output, games=kuhn_game(opponent), **{"warm_start.steps": 4, "warm_start.batch_size": 8, **extra})


def test_only_the_learners_turns_are_trained_against_a_fixed_opponent(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.trainer import Trainer

    config = load_config(None, opponent_run(tiny_qwen3, tmp_path, '{initial = 1.0}', steps=1, samples_per_step=16))
    with Trainer(config) as trainer:
        worker = trainer.learners.workers[0]
        played, trained = [], []
        play, update = trainer.generators.workers[0].play, worker.update
        trainer.generators.workers[0].play = lambda *a: played.append(r := play(*a)) or r
        worker.update = lambda samples, advantages: trained.extend(samples) or update(samples, advantages)
        trainer.train(progress=False)
    policies = Counter(s.policy for r in played for s in r.samples)
    assert policies[LEARNER] and policies["initial"]  # the frozen copy played its seat
    assert trained and {s.policy for s in trained} == {LEARNER}
    assert {s.opponent for s in trained} == {"initial"}
    assert all(r.pairing == [LEARNER, "initial"] for g in played for r in g.games)


def test_pool_snapshots_ratings_and_their_resume(tiny_qwen3: Path, tmp_path: Path) -> None:
    from spiral_train.trainer import Trainer

    overrides = opponent_run(
        tiny_qwen3, tmp_path, '{self = 0.5, population = 0.5}', steps=3,
        **{"population.every": 1, "population.size": 2, "eval.kuhn_exploitability": "true", "eval.every": 3, "checkpoint.keep_last": 2},
    )
    config = load_config(None, overrides)
    with Trainer(config) as trainer:
        history = trainer.train(progress=False)
        members = [m.name for m in trainer.population.members]
        ratings = dict(trainer.ratings.values)
        served = trainer.generators.workers[0].frozen()
        weights = {k: v.clone() for k, v in trainer.generators.workers[0].opponents["snapshot-000002"].backend.model.state_dict().items()}
    assert members == ["snapshot-000002", "snapshot-000003"]  # FIFO of 2, one per step from 0
    assert served == members
    assert set(ratings) == {LEARNER, *members}
    last = history[-1]
    assert 0 <= last["eval/kuhn_exploitability_average"] <= 0.5 and "eval/kuhn_exploitability_population" in last
    assert last["population/size"] == 2
    files = sorted(p.name for p in (tmp_path / "opponents").iterdir())
    assert files == ["snapshot-000001.safetensors", "snapshot-000002.safetensors", "snapshot-000003.safetensors"]  # 0: no kept checkpoint names it

    step2 = tmp_path / "checkpoints" / "step-000002"
    resumed_config = load_config(None, overrides)
    with Trainer(resumed_config) as resumed:
        resumed.resume(step2)
        assert [m.name for m in resumed.population.members] == ["snapshot-000001", "snapshot-000002"]
        assert resumed.generators.workers[0].frozen() == ["snapshot-000001", "snapshot-000002"]
        assert resumed.ratings.rating(LEARNER) != 1000.0
        served = resumed.generators.workers[0].opponents["snapshot-000002"].backend.model.state_dict()
        assert all(torch.equal(served[k], v) for k, v in weights.items())

    # a snapshot file that changed since the checkpoint is refused, naming it
    file = tmp_path / "opponents" / "snapshot-000003.safetensors"
    file.write_bytes(file.read_bytes()[:-8] + b"\0" * 8)
    with Trainer(load_config(None, overrides)) as damaged, pytest.raises(CheckpointError, match="snapshot-000003"):
        damaged.resume(latest_checkpoint(tmp_path / "checkpoints"))


def test_an_openai_compatible_endpoint_is_an_opponent(tiny_qwen3: Path, tmp_path: Path, vllm_server: str) -> None:
    """A real vLLM server plays the other seat through the ``openai@`` agent spec; its turns
    are moves, not samples, so only the learner's are trained."""
    from spiral_train.trainer import Trainer

    endpoint = f"openai@base_url={vllm_server},model={tiny_qwen3},max_tokens=8"
    config = load_config(None, opponent_run(tiny_qwen3, tmp_path, f'"{endpoint}"', steps=1, samples_per_step=8))
    with Trainer(config) as trainer:
        worker = trainer.learners.workers[0]
        trained, update = [], worker.update
        worker.update = lambda samples, advantages: trained.extend(samples) or update(samples, advantages)
        history = trainer.train(progress=False)
    assert trained and {(s.policy, s.opponent) for s in trained} == {(LEARNER, endpoint)}
    assert "KuhnPoker-v1/" + endpoint + "/role0/return" in history[-1] or "KuhnPoker-v1/" + endpoint + "/role1/return" in history[-1]
    assert f"rating/{endpoint}" in history[-1]


def test_the_kl_reference_is_the_warm_started_policy_also_after_a_resume(tiny_qwen3: Path, tmp_path: Path) -> None:
    """With a warm start, KL pulls toward the policy self-play starts from (the untrained model
    does not even know the answer format); a resumed run gets it back from ``initial``."""
    from transformers import AutoModelForCausalLM

    from spiral_train.trainer import Trainer

    overrides = opponent_run(tiny_qwen3, tmp_path, '"self"', steps=1, **{"learner.kl_coef": 0.1})
    untrained = AutoModelForCausalLM.from_pretrained(tiny_qwen3).state_dict()
    with Trainer(load_config(None, overrides)) as trainer:
        warmed = {}
        warm_start = trainer.learners.workers[0].warm_start

        def keep_warmed() -> float:
            loss = warm_start()
            warmed.update({k: v.clone() for k, v in trainer.learners.workers[0].model.state_dict().items()})
            return loss

        trainer.learners.workers[0].warm_start = keep_warmed
        trainer.train(progress=False)
        reference = trainer.learners.workers[0].learner.reference.module.state_dict()
        assert all(torch.equal(reference[k], warmed[k]) for k in warmed)
        assert not all(torch.equal(reference[k], untrained[k]) for k in warmed)
        assert trainer.generators.workers[0].frozen() == []  # initial is the reference here, not an opponent
    with Trainer(load_config(None, [*overrides, "steps=2"])) as resumed:
        resumed.resume(latest_checkpoint(tmp_path / "checkpoints"))
        reference = resumed.learners.workers[0].learner.reference.module.state_dict()
        assert all(torch.equal(reference[k], warmed[k]) for k in warmed)


def test_a_moving_kl_reference_is_the_policy_of_its_last_move_also_after_a_resume(tiny_qwen3: Path, tmp_path: Path) -> None:
    """``learner.kl_reference_every = 2``: the reference becomes the policy after steps 2 and
    4; a run resumed from step 3 pulls toward step 2's policy again; files no checkpoint names
    are pruned."""
    from spiral_train.trainer import Trainer

    overrides = opponent_run(
        tiny_qwen3, tmp_path, '"self"', steps=4, **{"learner.kl_coef": 0.1, "learner.kl_reference_every": 2, "checkpoint.every": 1, "checkpoint.keep_last": 2}
    )
    with Trainer(load_config(None, overrides)) as trainer:
        after: dict[int, dict[str, torch.Tensor]] = {}
        step = trainer.step

        def keep_policy() -> dict[str, float]:
            metrics = step()
            after[trainer.step_index] = {k: v.clone() for k, v in trainer.learners.workers[0].model.state_dict().items()}
            return metrics

        trainer.step = keep_policy
        trainer.train(progress=False)
        reference = trainer.learners.workers[0].learner.reference.module.state_dict()
        assert all(torch.equal(reference[k], after[4][k]) for k in after[4])
        assert set(trainer.frozen) == {"reference-000004"}
        assert trainer.generators.workers[0].frozen() == []  # a reference, not an opponent
    files = sorted(p.name for p in (tmp_path / "opponents").iterdir())
    assert files == ["reference-000002.safetensors", "reference-000004.safetensors"]  # initial: no kept checkpoint (3, 4) names it
    with Trainer(load_config(None, overrides)) as resumed:
        resumed.resume(tmp_path / "checkpoints" / "step-000003")
        reference = resumed.learners.workers[0].learner.reference.module.state_dict()
        assert all(torch.equal(reference[k], after[2][k]) for k in after[2])
        assert not all(torch.equal(reference[k], after[3][k]) for k in after[3])


def test_a_moving_kl_reference_needs_the_kl_term_and_full_weights(tiny_qwen3: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kl_reference_every: it moves"):
        load_config(None, opponent_run(tiny_qwen3, tmp_path, '"self"', **{"learner.kl_reference_every": 2}))
    with pytest.raises(ConfigError, match="adapters off"):
        load_config(None, opponent_run(tiny_qwen3, tmp_path, '"self"', **{"learner.kl_coef": 0.1, "learner.kl_reference_every": 2, "model.lora_rank": 4}))
