"""``spiral-train export``: any checkpoint of a run (either format) as a Hugging Face model folder
that transformers and vLLM load with the trained model's log-probs, LoRA merged; the output
folder is never overwritten silently nor left half written; bad runs and steps are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from spiral_train import checkpoint
from spiral_train.checkpoint import CheckpointState, RNGState, TrainerState
from spiral_train.cli import main
from spiral_train.config import load_config
from spiral_train.export import ExportError, export_checkpoint
from tests.single_process_checkpoint import save_checkpoint
from tests.test_checkpoint import rehash
from tests.test_train_run import tiny_overrides

SEQUENCES = [[5, 17, 230, 41, 9, 1500, 3, 77], [2, 400, 401, 402, 12]]
"""Token ids whose teacher-forced log-probs are compared."""


def logprobs(model: torch.nn.Module) -> list[torch.Tensor]:
    """log p(token t | tokens before t) of each of :data:`SEQUENCES` under ``model``."""
    rows = []
    with torch.inference_mode():
        for sequence in SEQUENCES:
            ids = torch.tensor([sequence], device=next(model.parameters()).device)
            logits = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            rows.append(logits.gather(-1, ids[0, 1:, None])[:, 0].cpu())
    return rows


def assert_same_logprobs(actual: list[torch.Tensor], expected: list[torch.Tensor], atol: float) -> None:
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def exported(out: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(out).eval()


@pytest.fixture(scope="module")
def small_run(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, list[torch.Tensor]]]:
    """A run folder as a trainer leaves it, made without one: step-000001 in the sharded format,
    step-000002 (one more step) in the single-process one; and each step's log-probs."""
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("small-run")
    config = load_config(None, [f'model.path="{tiny_qwen3}"', f'output_dir="{run}"']).to_dict()
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator()
    expected = {}
    for step in (1, 2):
        ids = torch.tensor(SEQUENCES[:1])
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        expected[step] = logprobs(model)
        trainer = TrainerState(step, 0, 0, {}, config)
        if step == 1:
            staging = checkpoint.begin_checkpoint(run / "checkpoints", step)
            checkpoint.save_learner_state(staging, model, optimizer)
            state = CheckpointState(trainer, scheduler.state_dict(), generator.get_state().numpy().tobytes(), RNGState.capture())
            checkpoint.finish_checkpoint(staging, state)
        else:
            save_checkpoint(run / "checkpoints", trainer, model, optimizer, scheduler, generator)
    return run, expected


# --- what is exported -----------------------------------------------------------------------------


def test_any_checkpoint_of_either_format_exports_the_trained_model(small_run: tuple[Path, dict], tiny_qwen3: Path, tmp_path: Path) -> None:
    run, expected = small_run
    lines: list[str] = []
    latest = export_checkpoint(run, tmp_path / "latest", log=lines.append)  # step 2: single-process format
    assert lines == [f"exporting {run / 'checkpoints' / 'step-000002'}"]
    assert_same_logprobs(logprobs(exported(latest)), expected[2], atol=1e-5)
    first = export_checkpoint(run, tmp_path / "first", step="step-1")  # the sharded format
    assert_same_logprobs(logprobs(exported(first)), expected[1], atol=1e-5)
    names = sorted(p.name for p in first.iterdir())
    assert names == ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((first / "config.json").read_text())
    assert config["dtype"] == "float32" and config["architectures"] == ["Qwen3ForCausalLM"] and "attn_implementation" not in json.dumps(config)
    assert json.loads((first / "generation_config.json").read_text())["eos_token_id"] == json.loads((tiny_qwen3 / "generation_config.json").read_text())["eos_token_id"]
    assert (first / "tokenizer.json").read_bytes() == (tiny_qwen3 / "tokenizer.json").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_base_without_a_generation_config_exports_none(small_run: tuple[Path, dict], tiny_qwen3: Path, tmp_path: Path) -> None:
    base = Path(shutil.copytree(tiny_qwen3, tmp_path / "base"))
    (base / "generation_config.json").unlink()
    run = Path(shutil.copytree(small_run[0], tmp_path / "run"))
    path = run / "checkpoints" / "step-000001"
    state = json.loads((path / "state.json").read_text())
    state["config"]["model"]["path"] = str(base)
    (path / "state.json").write_text(json.dumps(state))
    rehash(path)
    out = export_checkpoint(run, tmp_path / "out", step=1)
    assert not (out / "generation_config.json").exists() and (out / "config.json").exists()


# --- refusals -------------------------------------------------------------------------------------


def test_the_output_folder_is_never_overwritten_silently(small_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, expected = small_run
    out = tmp_path / "out"
    out.mkdir()  # empty: fine
    assert main(["export", str(run), str(out), "--step", "1"]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run), str(out)]) == 1
    message = capsys.readouterr().err
    assert message == f"spiral-train export: {out} is not empty: choose another output folder, or pass --overwrite to replace it\n"
    assert (out / "notes.txt").read_text() == "mine"
    assert main(["export", str(run), str(out), "--overwrite"]) == 0
    assert not (out / "notes.txt").exists()
    assert_same_logprobs(logprobs(exported(out)), expected[2], atol=1e-5)
    (tmp_path / "file").write_text("x")
    assert main(["export", str(run), str(tmp_path / "file"), "--overwrite"]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err
    copy = Path(shutil.copytree(run, tmp_path / "runs" / "run"))
    for folder in (copy, copy.parent):
        assert main(["export", str(copy), str(folder), "--overwrite"]) == 1
        assert capsys.readouterr().err == f"spiral-train export: {folder} is or holds the run folder {copy}: choose another output folder\n"
    for inside in (copy / "checkpoints", copy / "checkpoints" / "step-000001", copy / "tensorboard" / "model"):
        assert main(["export", str(copy), str(inside), "--overwrite"]) == 1
        assert f"spiral-train export: {inside} lies in {copy / inside.relative_to(copy).parts[0]}, which the run writes" in capsys.readouterr().err
    assert checkpoint.choose_checkpoint(copy / "checkpoints").step == 2
    assert main(["export", str(copy), str(copy / "exported")]) == 0  # beside what the run writes: fine
    capsys.readouterr()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--step", "7"], "{run}/checkpoints has no step-000007; its complete checkpoints: step-000001, step-000002"),
        (["--step", "../1"], "'../1' is not a checkpoint step (write step-N, step-00000N or N)"),
        (["--step", "abc"], "'abc' is not a checkpoint step (write step-N, step-00000N or N)"),
    ],
)
def test_a_bad_step_is_one_line_and_exit_1(small_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str) -> None:
    run, _ = small_run
    assert main(["export", str(run), str(tmp_path / "out"), *arguments]) == 1
    assert capsys.readouterr().err == f"spiral-train export: {message.format(run=run)}\n"
    assert not (tmp_path / "out").exists()


def test_a_bad_run_folder_or_damaged_checkpoint_is_one_line_and_exit_1(small_run: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert main(["export", str(tmp_path / "nowhere"), out]) == 1
    assert capsys.readouterr().err == f"spiral-train export: {tmp_path / 'nowhere'} is not a folder: give the output_dir of a training run\n"
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), out]) == 1
    assert "holds no checkpoints folder" in capsys.readouterr().err
    (tmp_path / "empty" / "checkpoints").mkdir()
    assert main(["export", str(tmp_path / "empty"), out]) == 1
    assert capsys.readouterr().err == f"spiral-train export: no loadable checkpoint in {tmp_path / 'empty' / 'checkpoints'}: there is none\n"
    run = Path(shutil.copytree(small_run[0], tmp_path / "run"))
    data = run / "checkpoints" / "step-000001" / "learner" / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[:-1] + bytes([data.read_bytes()[-1] ^ 1]))
    assert main(["export", str(run), out, "--step", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"spiral-train export: {run / 'checkpoints' / 'step-000001'} is not loadable: learner/__0_0.distcp does not match its sha256")
    assert len(err.splitlines()) == 1 and not Path(out).exists()


def test_a_failed_write_leaves_the_output_folder_as_it_was(small_run: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from transformers import PreTrainedTokenizerBase

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full_disk)
    with pytest.raises(ExportError, match=f"could not write {tmp_path / 'out'}: No space left on device; it is as it was"):
        export_checkpoint(small_run[0], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# --- a training run: full weights and LoRA, in transformers and vLLM -------------------------------


def _train_one_step(tiny_qwen3: Path, output: Path, **extra: object) -> list[torch.Tensor]:
    """A 1-step CPU run of the tiny model; the trained model's log-probs."""
    from spiral_train.trainer import Trainer

    with Trainer(load_config(None, tiny_overrides(tiny_qwen3, output, steps=1, **extra))) as trainer:
        trainer.train(progress=False, log=lambda line: None)
        return logprobs(trainer.learners.workers[0].model.eval())


@pytest.fixture(scope="module")
def trained(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[torch.Tensor]]:
    """A 1-step run exported; the trained model's log-probs."""
    run = tmp_path_factory.mktemp("trained-run")
    expected = _train_one_step(tiny_qwen3, run)
    return export_checkpoint(run, tmp_path_factory.mktemp("exported") / "model"), expected


@pytest.mark.slow
def test_a_trained_run_exports_its_model(trained: tuple[Path, list[torch.Tensor]]) -> None:
    out, expected = trained
    assert_same_logprobs(logprobs(exported(out)), expected, atol=1e-5)


@pytest.mark.slow
def test_a_lora_run_exports_its_merged_weights(tiny_qwen3: Path, tmp_path: Path) -> None:
    expected = _train_one_step(tiny_qwen3, tmp_path / "run", **{"model.lora_rank": "4", "model.dtype": '"float32"'})
    out = export_checkpoint(tmp_path / "run", tmp_path / "out")
    weights = load_file(out / "model.safetensors")
    base = load_file(tiny_qwen3 / "model.safetensors")
    assert weights.keys() == base.keys()  # the base model's names: no adapters, no base_layer
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(weights["model.norm.weight"], base["model.norm.weight"])  # frozen, not adapted
    assert_same_logprobs(logprobs(exported(out)), expected, atol=1e-5)


@pytest.mark.slow
def test_vllm_loads_the_exported_model_with_its_log_probs(trained: tuple[Path, list[torch.Tensor]]) -> None:
    pytest.importorskip("vllm")
    import vllm

    from spiral_agents.llm.vllm_backend import VLLMBackend

    out, expected = trained
    backend = VLLMBackend(out, max_model_len=64)
    prompts = [{"prompt_token_ids": sequence} for sequence in [*SEQUENCES]]
    outputs = backend.llm.generate(prompts, vllm.SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    for output, sequence, want in zip(outputs, SEQUENCES, expected, strict=True):
        got = torch.tensor([position[token].logprob for position, token in zip(output.prompt_logprobs[1:], sequence[1:])])
        torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
