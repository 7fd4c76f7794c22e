"""LoRA adapters on VLLMBackend (vLLM's CPU build, the tiny Qwen3): views that generate with the
shared engine plus one peft-saved adapter match the merged peft model in transformers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("vllm")

from spiral_agents.llm.backend import Backend, SamplingConfig
from spiral_agents.llm.vllm_backend import LoRAView, VLLMBackend

pytestmark = pytest.mark.slow  # one engine start and its first generation: 20-40 s on 2 cores

TEXTS = [
    "Tic tac toe. Legal moves: [0] [1] [2] [3]",
    "x",
    "The best move is \\boxed{4}. Let me think.",
]
GREEDY = SamplingConfig(temperature=0, max_tokens=12)
SAMPLE = SamplingConfig(temperature=1.0, max_tokens=12, n=2)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTER_SEEDS = {"a": 1, "b": 2}
LOGPROB_TOLERANCE = 1e-4  # float32 on both sides: measured 5e-7


def peft_model(base_dir: Path, seed: int, rank: int = 8):
    """A LoRA on every projection of the tiny Qwen3 whose B matrices are random (peft starts
    them at zero), so the adapter changes what the model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=PROJECTIONS)
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    return model.eval()


def greedy_reference(
    model, prompts: list[list[int]], max_tokens: int
) -> list[tuple[list[int], list[float]]]:
    """Greedy tokens and their log_softmax log-probs, one full forward per token."""
    stops = set(model.generation_config.eos_token_id)
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            ids, logprobs = list(prompt), []
            for _ in range(max_tokens):
                step = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], dim=-1)
                token = int(step.argmax())
                ids.append(token)
                logprobs.append(float(step[token]))
                if token in stops:
                    break
            rows.append((ids[len(prompt) :], logprobs))
    return rows


@pytest.fixture(scope="module")
def backend(tiny_qwen3: Path) -> VLLMBackend:
    return VLLMBackend(
        tiny_qwen3, max_model_len=256, enable_lora=True, max_lora_rank=8, max_loras=2
    )


@pytest.fixture(scope="module")
def prompts(backend: VLLMBackend) -> list[list[int]]:
    return [backend.tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


@pytest.fixture(scope="module")
def adapter_dirs(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    for name, seed in ADAPTER_SEEDS.items():
        peft_model(tiny_qwen3, seed).save_pretrained(root / name)
    return {name: root / name for name in ADAPTER_SEEDS}


@pytest.fixture(scope="module")
def references(tiny_qwen3: Path, prompts) -> dict[str, list[tuple[list[int], list[float]]]]:
    """Greedy continuations of the base model and of each adapter's merged peft model."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    rows = {"base": greedy_reference(base, prompts, GREEDY.max_tokens)}
    for name, seed in ADAPTER_SEEDS.items():
        merged = peft_model(tiny_qwen3, seed).merge_and_unload()
        rows[name] = greedy_reference(merged, prompts, GREEDY.max_tokens)
    return rows


def token_rows(outputs) -> list[list[list[int]]]:
    return [[generation.token_ids for generation in row] for row in outputs]


def assert_matches(outputs, reference) -> None:
    for (generation,), (tokens, logprobs) in zip(outputs, reference, strict=True):
        assert generation.error is None
        assert generation.token_ids == tokens
        assert generation.logprobs == pytest.approx(logprobs, abs=LOGPROB_TOLERANCE)


def test_adapters_match_their_merged_peft_models_and_the_base_is_unchanged(
    backend, adapter_dirs, prompts, references
):
    assert_matches(backend.generate(prompts, GREEDY), references["base"])
    for name, path in adapter_dirs.items():
        assert [tokens for tokens, _ in references[name]] != [
            tokens for tokens, _ in references["base"]
        ]
        assert_matches(backend.adapter(name, path).generate(prompts, GREEDY), references[name])
    assert_matches(backend.generate(prompts, GREEDY), references["base"])


def test_two_adapters_interleaved_each_give_their_own_outputs(
    backend, adapter_dirs, prompts, references
):
    views = {name: backend.adapter(name, path) for name, path in adapter_dirs.items()}
    order = ["a", "base", "b", "a", "b", "base"]
    for name in order:
        source = backend if name == "base" else views[name]
        assert_matches(source.generate(prompts, GREEDY), references[name])
    seeds = [5, 6, 7]
    sampled = {name: views[name].generate(prompts, SAMPLE, seeds) for name in views}
    for name, view in views.items():
        assert token_rows(view.generate(prompts, SAMPLE, seeds)) == token_rows(sampled[name])
    assert token_rows(sampled["a"]) != token_rows(sampled["b"])


def test_views_are_backends_with_one_stable_id_per_name(backend, adapter_dirs, tmp_path):
    view = backend.adapter("a", adapter_dirs["a"])
    assert isinstance(view, Backend) and isinstance(view, LoRAView)
    assert view.tokenizer is backend.tokenizer and view.name == "a"
    assert backend.adapter("a", str(adapter_dirs["a"])) is view
    ids = {
        backend.adapter(name, path).lora_request.lora_int_id for name, path in adapter_dirs.items()
    }
    assert ids == {1, 2}
    copy = shutil.copytree(adapter_dirs["a"], tmp_path / "copy")
    with pytest.raises(ValueError, match="already loaded from"):
        backend.adapter("a", copy)


def test_bad_adapter_folders_are_clear_errors_and_leave_the_engine_working(
    backend, tiny_qwen3, adapter_dirs, prompts, references, tmp_path
):
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        backend.adapter("missing", tmp_path / "missing")
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        backend.adapter("model", tiny_qwen3)
    peft_model(tiny_qwen3, seed=3, rank=16).save_pretrained(tmp_path / "rank16")
    with pytest.raises(ValueError, match="cannot load LoRA adapter 'rank16'.*max_lora_rank 8"):
        backend.adapter("rank16", tmp_path / "rank16")
    no_weights = shutil.copytree(adapter_dirs["b"], tmp_path / "no-weights")
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match="cannot load LoRA adapter 'no-weights'"):
        backend.adapter("no-weights", no_weights)
    assert_matches(backend.generate(prompts, GREEDY), references["base"])
    # a name whose folder failed is free for another folder
    assert_matches(
        backend.adapter("no-weights", adapter_dirs["b"]).generate(prompts, GREEDY), references["b"]
    )
