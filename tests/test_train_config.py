"""The training config tree: files, overrides, and every bad value caught before a model loads."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from spiral_train.cli import main
from spiral_train.config import ConfigError, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load_and_validate() -> None:
    for path in sorted((ROOT / "configs").glob("*")):
        assert isinstance(load_config(path), TrainConfig)
    paper = load_config(ROOT / "configs" / "qwen3-4b-base.yaml")
    assert paper.learner.learning_rate == 1e-6 and paper.samples_per_step == 128 and paper.steps == 400
    assert paper.learner.clip == 0.2 and paper.learner.epochs == 2 and paper.learner.kl_coef == 0.0
    invalid = paper.rewards.invalid_move
    assert (invalid.retries, invalid.offender_reward, invalid.opponent_reward) == (0, -1.5, 0.5)
    assert paper.rae.alpha == 0.95 and paper.sampling.max_tokens == 4096
    assert [g.id for g in paper.games] == ["TicTacToe-v0", "KuhnPoker-v1", "SimpleNegotiation-v1"]
    lora = load_config(ROOT / "configs" / "qwen3-4b-instruct-lora.yaml")
    assert lora.model.lora_rank == 32 and lora.learner.learning_rate == 4e-5


def test_runtime_settings_are_the_runtime_types() -> None:
    from spiral_agents.llm.backend import SamplingConfig
    from spiral_envs import InvalidMovePolicy
    from spiral_train.learner import LearnerConfig
    from spiral_train.loss import LossConfig

    config = load_config(None, ["sampling.temperature=0.7", "learner.clip=0.1"])
    assert isinstance(config.sampling, SamplingConfig) and config.sampling.temperature == 0.7
    assert isinstance(config.learner, LearnerConfig) and isinstance(config.learner, LossConfig)
    assert isinstance(config.rewards.invalid_move, InvalidMovePolicy)


def test_yaml_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("learner:\n  learning_rate: 1e-3\n  max_grad_norm: 2E+0\nwarm_start:\n  learning_rate: .5e-2\n")
    config = load_config(path)
    assert config.learner.learning_rate == 1e-3 and config.learner.max_grad_norm == 2.0
    assert config.warm_start.learning_rate == 0.005


def test_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('steps = 7\n[learner]\nlearning_rate = 2e-6\n[[games]]\nid = "Nim-v0"\n')
    config = load_config(path, ["learner.epochs=3", "eval.opponents=['random', 'nim-optimal']", "eval.game_ids=[Nim-v0]"])
    assert config.steps == 7 and config.learner.learning_rate == 2e-6 and config.learner.epochs == 3
    assert [g.id for g in config.games] == ["Nim-v0"]
    assert config.eval.opponents == ["random", "nim-optimal"]


def test_overrides_address_list_items_and_take_yaml_lists() -> None:
    config = load_config(None, ["games.0.id=Nim-v0", "games.1.env_kwargs.rounds=3", "eval.opponents=[random,random@seed=4]"])
    assert [g.id for g in config.games] == ["Nim-v0", "KuhnPoker-v1", "SimpleNegotiation-v1"]
    assert config.games[1].env_kwargs == {"rounds": 3}
    assert config.eval.opponents == ["random", "random@seed=4"]
    appended = load_config(None, ["games.3.id=Nim-v0"])
    assert [g.id for g in appended.games][-1] == "Nim-v0"
    with pytest.raises(ConfigError, match=r"games.7: no item 7 in a list of 3"):
        load_config(None, ["games.7.id=Nim-v0"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("learner.learning_rte=1", "learner.learning_rte: unknown setting"),
        ("checkpoint_every=3", r"checkpoint_every: unknown setting \(now checkpoint.every\)"),
        ("steps=0", "steps: Input should be greater than or equal to 1"),
        ("steps=ten", "steps: Input should be a valid integer"),
        ("steps=2.5", "steps: Input should be a valid integer"),
        ("steps=true", "steps: Input should be a valid integer"),
        ("learner.clip=1.5", "learner: clip must lie in"),
        ("learner.max_grad_norm=nan", "learner.max_grad_norm: Input should be a finite number"),
        ("learner.normaliser=inf", "learner.normaliser: Input should be a finite number"),
        ("learner.learning_rate=-1e-6", "learning_rate must be positive"),
        ("learner.betas=[0.9]", "learner.betas"),
        ("learner.betas=[0.9,1.5]", "betas must lie in"),
        ("rewards.invalid_move.offender_reward=-inf", "rewards.invalid_move.offender_reward: Input should be a finite"),
        ("rewards.invalid_move.retries=-1", "rewards.invalid_move: retries must be a non-negative"),
        ("rae.alpha=1.0", "rae.alpha: Input should be less than 1"),
        ("generator.backend=tpu", "generator.backend: Input should be"),
        ("generator.backend=vllm-server", "generator.base_url: must be an http"),
        ("generator.request_timeout=0", "generator.request_timeout"),
        ("generator.gpu_memory_utilization=1.5", "generator.gpu_memory_utilization"),
        ('games=[{id = "Chess-v0"}]', "games.0.id: unknown game 'Chess-v0'; registered games: "),
        ("games=[]", "games: List should have at least 1 item"),
        ("games.0.env_kwargs.rounds=2", "games.0.env_kwargs: TicTacToe-v0 does not take rounds; it takes: "),
        ("games.1.env_kwargs.rounds=-2", "games.1.env_kwargs: KuhnPoker-v1 rejects"),
        ("games.0.weight=-1", "games.0.weight"),
        ("learner=3", "learner: expected a table of settings, got 3"),
        ("nonsense", "must look like section.key=value"),
        ("steps.x=3", "steps: is a single value, not a section"),
        ("seed=-1", "seed: Input should be greater than or equal to 0"),
        ("seed=99999999999999999999", "seed"),
        ("model.dtype=float8", "model.dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
        ("sampling.top_p=0", "sampling: top_p must be in"),
        ("sampling.n=4", "sampling.n: self-play samples one move per prompt"),
        ("eval.temperature=-1", "eval.temperature"),
        ("eval.opponents=[nobody]", "eval.opponents: 'nobody': unknown agent 'nobody'; built-in agents: "),
        ("eval.opponents=[random@seed=abc]", "eval.opponents: 'random@seed=abc'"),
        ("eval.opponents=[minimax]", "eval.opponents: 'minimax'"),
        ("eval.game_ids=[Go-v0]", "eval.game_ids: unknown game"),
        ("output_dir=''", "output_dir: String should have at least 1 character"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    overrides = [override, "eval.game_ids=[KuhnPoker-v1]"] if "minimax" in override else [override]
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["steps", "learner.learning_rate", "learner.epochs", "rae.alpha", "sampling.top_k", "eval.games", "seed", "games.0.weight", "learner.betas", "model.lora_rank", "tensorboard"]),
    st.one_of(st.text(max_size=20), st.floats(), st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3)),
)
def test_any_value_is_accepted_or_a_config_error(key: str, value: object) -> None:
    """No value of any shape raises anything but ConfigError, and what is accepted is finite."""
    try:
        config = load_config(None, [f"{key}={value}"])
    except ConfigError as error:
        assert str(error)
        return
    for number in (config.steps, config.learner.learning_rate, config.rae.alpha, config.games[0].weight):
        assert math.isfinite(number)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.yaml", "learner: [1, 2\n", "bad.yaml: YAML syntax error at line 2"),
        ("bad.toml", "steps = = 3\n", "bad.toml: TOML syntax error"),
        ("list.yaml", "- 1\n- 2\n", "the top level must be a mapping"),
        ("date.yaml", "steps: 2026-01-01\n", "not plain data"),
        ("run.json", "{}", "config files must be .yaml, .yml or .toml"),
        ("tabs.yaml", "steps:\n\t- 3\n", "YAML syntax error"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "spiral_train.cli", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT)


def test_cli_errors_are_one_line_per_problem_without_traceback(tmp_path: Path) -> None:
    result = _cli("--config", "configs/cpu-demo.yaml", "--quiet", "steps=-1", "learner.clip=nan")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "spiral-train: bad config: learner.clip: Input should be a finite number, got nan",
        "spiral-train: bad config: steps: Input should be greater than or equal to 1, got -1",
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [\n")
    for args in (["--config", str(broken)], ["--config", str(tmp_path)], []):
        result = _cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith("spiral-train: bad config: ") and len(result.stderr.splitlines()) == 1
    assert "pass --config configs/cpu-demo.yaml" in _cli().stderr


def test_cli_refuses_an_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _cli("--config", "configs/cpu-demo.yaml", f"output_dir={blocker / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"spiral-train: bad config: output_dir: cannot write to {blocker / 'run'}")


def test_print_config_prints_the_resolved_tree(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    overrides = ["steps=3", "games.0.env_kwargs.rounds=2"]
    assert main(["--config", str(ROOT / "configs/cpu-demo.yaml"), "--print-config", *overrides]) == 0
    text = capsys.readouterr().out
    printed = yaml.safe_load(text)
    demo = yaml.safe_load((ROOT / "configs/cpu-demo.yaml").read_text())
    assert printed["steps"] == 3 and printed["games"][0]["env_kwargs"] == {**demo["games"][0]["env_kwargs"], "rounds": 2}
    assert printed["learner"]["learning_rate"] == demo["learner"]["learning_rate"] and printed["checkpoint"]["keep_last"] == 3
    (tmp_path / "printed.yaml").write_text(text)
    assert load_config(tmp_path / "printed.yaml") == load_config(ROOT / "configs/cpu-demo.yaml", overrides)


def test_imports_register_the_users_games_before_games_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_config_games.py").write_text(
        "import spiral_envs\n"
        "from spiral_envs.games.tictactoe import TicTacToe\n\n\n"
        "class Mine(TicTacToe):\n"
        "    id = 'MyConfigTicTacToe-v0'\n\n\n"
        "spiral_envs.register_game(Mine)\n"
    )
    monkeypatch.chdir(tmp_path)  # found in the current folder, as the arena finds it
    config = load_config(None, ["imports=[my_config_games]", "games=[{id: MyConfigTicTacToe-v0}]"])
    assert [g.id for g in config.games] == ["MyConfigTicTacToe-v0"]
    with pytest.raises(ConfigError, match=r"^imports: cannot import 'no_such_module_here'"):
        load_config(None, ["imports=[no_such_module_here]"])


def test_reasoning_eval_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"eval.reasoning.benchmarks: unknown no-such-bench"):
        load_config(None, ["eval.reasoning.every=5", "eval.reasoning.benchmarks=[no-such-bench]"])
    with pytest.raises(ConfigError, match=r"eval.reasoning.preset: Input should be 'spiral' or 'greedy'"):
        load_config(None, ["eval.reasoning.preset=best"])
    assert load_config(None, ["eval.reasoning.every=5", "eval.reasoning.limit=3"]).eval.reasoning.limit == 3
