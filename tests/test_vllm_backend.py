"""VLLMBackend on the tiny offline Qwen3 with vLLM's CPU build: one engine for the module."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
vllm = pytest.importorskip("vllm")

from spiral_agents.llm.backend import Backend, SamplingConfig, UpdatableBackend
from spiral_agents.llm.vllm_backend import VLLMBackend

pytestmark = pytest.mark.slow  # starting the engine alone takes 10-30 s on 2 cores

TEXTS = [
    "Tic tac toe. Legal moves: [0] [1] [2] [3]",
    "x",
    "The best move is \\boxed{4}. Let me think step by step about this game and its rules.",
]
SAMPLE = SamplingConfig(temperature=1.0, max_tokens=12)
GREEDY = SamplingConfig(temperature=0, max_tokens=12)
MAX_MODEL_LEN = 256


@pytest.fixture(scope="module")
def backend(tiny_qwen3: Path) -> VLLMBackend:
    return VLLMBackend(tiny_qwen3, max_model_len=MAX_MODEL_LEN)


@pytest.fixture(scope="module")
def reference(tiny_qwen3: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompts(backend: VLLMBackend) -> list[list[int]]:
    return [backend.tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


def tokens(outputs) -> list[list[list[int]]]:
    return [[generation.token_ids for generation in per_prompt] for per_prompt in outputs]


def greedy_reference(model, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_tokens
            )
            rows.append(out[0, len(prompt) :].tolist())
    return rows


def test_implements_the_protocols(backend):
    assert isinstance(backend, Backend) and isinstance(backend, UpdatableBackend)
    assert isinstance(backend.llm, vllm.LLM)
    assert backend.tokenizer.decode(backend.tokenizer("x y")["input_ids"]) == "x y"
    assert backend.tied_embeddings and backend.max_model_len == MAX_MODEL_LEN
    assert backend._tensors_in_process()  # VLLM_ENABLE_V1_MULTIPROCESSING=0 by default


def test_shapes_texts_and_logprobs(backend, prompts):
    sampling = SamplingConfig(temperature=1.0, max_tokens=12, n=3)
    outputs = backend.generate(prompts, sampling, seeds=[1, 2, 3])
    assert [len(per_prompt) for per_prompt in outputs] == [3, 3, 3]
    reasons = []
    for per_prompt in outputs:
        for generation in per_prompt:
            assert generation.error is None
            assert 1 <= len(generation.token_ids) <= sampling.max_tokens
            assert all(isinstance(token, int) for token in generation.token_ids)
            assert len(generation.logprobs) == len(generation.token_ids)
            assert all(logprob <= 0 for logprob in generation.logprobs)
            shown = generation.token_ids
            if generation.finish_reason == "stop":
                shown = shown[:-1]
            else:
                assert generation.finish_reason == "length"
                assert len(generation.token_ids) == sampling.max_tokens
            assert generation.text == backend.tokenizer.decode(shown, skip_special_tokens=True)
            reasons.append(generation.finish_reason)
    assert "length" in reasons
    no_logprobs = SamplingConfig(temperature=1.0, max_tokens=12, n=3, logprobs=False)
    again = backend.generate(prompts, no_logprobs, seeds=[1, 2, 3])
    assert tokens(again) == tokens(outputs)
    assert all(generation.logprobs is None for per_prompt in again for generation in per_prompt)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(backend, prompts):
    first = backend.generate(prompts, SAMPLE, seeds=[11, 12, 13])
    assert tokens(backend.generate(prompts, SAMPLE, seeds=[11, 12, 13])) == tokens(first)
    reversed_batch = backend.generate(prompts[::-1], SAMPLE, seeds=[13, 12, 11])
    assert tokens(reversed_batch)[::-1] == tokens(first)
    assert tokens(backend.generate([prompts[1]], SAMPLE, seeds=[12]))[0] == tokens(first)[1]
    other = tokens(backend.generate(prompts, SAMPLE, seeds=[21, 22, 23]))
    assert all(a != b for a, b in zip(other, tokens(first)))


def test_seeded_batch_larger_than_one_scheduler_step(backend):
    # 64 seeded prompts of 200 tokens exceed one step's token budget: vLLM must not split a
    # prefill (on the CPU it then fails rewinding the request's generator).
    prompts = [[(7 * i + j) % 1000 + 10 for j in range(200)] for i in range(64)]
    outputs = backend.generate(prompts, SAMPLE, seeds=list(range(64)))
    assert [g.error for (g,) in outputs] == [None] * 64
    assert tokens(outputs)[5] == tokens(backend.generate([prompts[5]], SAMPLE, seeds=[5]))[0]


def test_n_samples_are_seeded_with_seed_plus_index(backend, prompts):
    sampling = SamplingConfig(temperature=1.0, max_tokens=12, n=3)
    (samples,) = backend.generate([prompts[0]], sampling, seeds=[5])
    for j, generation in enumerate(samples):
        (alone,) = backend.generate([prompts[0]], SAMPLE, seeds=[5 + j])[0]
        assert generation.token_ids == alone.token_ids
    assert len({tuple(generation.token_ids) for generation in samples}) == 3


def test_greedy_matches_transformers(backend, reference, prompts):
    outputs = backend.generate(prompts, SamplingConfig(temperature=0, max_tokens=20))
    assert tokens(outputs) == [[row] for row in greedy_reference(reference, prompts, 20)]
    assert all(per_prompt[0].finish_reason == "length" for per_prompt in outputs)


def test_top_k_and_top_p_truncate(backend, prompts):
    greedy = tokens(backend.generate(prompts, GREEDY))
    top1 = SamplingConfig(temperature=1.0, top_k=1, max_tokens=12)
    tiny_nucleus = SamplingConfig(temperature=1.0, top_p=1e-6, max_tokens=12)
    assert tokens(backend.generate(prompts, top1, seeds=[1, 2, 3])) == greedy
    assert tokens(backend.generate(prompts, tiny_nucleus, seeds=[1, 2, 3])) == greedy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_transformers(backend, reference, prompts, temperature):
    # vLLM's default logprobs_mode ("raw_logprobs") reports log_softmax(logits) at any temperature.
    sampling = SamplingConfig(temperature=temperature, max_tokens=16)
    outputs = backend.generate(prompts, sampling, seeds=[7, 8, 9])
    for prompt, (generation,) in zip(prompts, outputs):
        sequence = torch.tensor([prompt + generation.token_ids])
        with torch.inference_mode():
            logits = reference(sequence).logits[0, len(prompt) - 1 : -1]
        expected = logits.log_softmax(-1).gather(-1, sequence[0, len(prompt) :, None])[:, 0]
        torch.testing.assert_close(torch.tensor(generation.logprobs), expected, atol=1e-3, rtol=0)


def test_stop_tokens_end_generation(backend, prompts):
    (full,) = backend.generate([prompts[0]], SAMPLE, seeds=[3])[0]
    stop_token = full.token_ids[6]
    first = full.token_ids.index(stop_token)
    stopping = SamplingConfig(temperature=1.0, max_tokens=12, stop_token_ids=(stop_token,))
    (stopped,) = backend.generate([prompts[0]], stopping, seeds=[3])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: first + 1]  # the stop token is kept
    assert len(stopped.logprobs) == first + 1
    shown = backend.tokenizer.decode(full.token_ids[:first], skip_special_tokens=True)
    assert stopped.text == shown


def test_chat_messages_use_the_chat_template(backend):
    messages = [{"role": "user", "content": "Your move?"}]
    rendered = backend.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    ids = backend.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    chat = backend.generate([messages], SAMPLE, seeds=[4])
    assert tokens(chat) == tokens(backend.generate([ids], SAMPLE, seeds=[4]))


def test_bad_prompts_fail_alone(backend, prompts):
    expected = tokens(backend.generate([prompts[0], prompts[1]], GREEDY))
    too_long = prompts[2] * (MAX_MODEL_LEN // len(prompts[2]) + 1)
    bad = [[backend.vocab_size + 3], [], too_long]
    outputs = backend.generate([prompts[0], *bad, prompts[1]], GREEDY)
    assert [per_prompt[0].finish_reason for per_prompt in outputs] == [
        "length", "error", "error", "error", "length"
    ]
    assert "vocabulary" in outputs[1][0].error and "empty" in outputs[2][0].error
    assert "max_model_len" in outputs[3][0].error
    assert [tokens(outputs)[0], tokens(outputs)[4]] == expected


def test_a_failing_engine_call_gives_errors_not_exceptions(backend, prompts, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("engine fell over")

    monkeypatch.setattr(backend.llm, "generate", broken)
    outputs = backend.generate(prompts, SamplingConfig(max_tokens=4, n=2))
    assert [len(per_prompt) for per_prompt in outputs] == [2, 2, 2]
    for per_prompt in outputs:
        for generation in per_prompt:
            assert generation.finish_reason == "error" and "engine fell over" in generation.error


def test_bad_configuration_raises(tiny_qwen3, backend, prompts, monkeypatch):
    with pytest.raises(ValueError, match="does not exist"):
        VLLMBackend(tiny_qwen3 / "missing")
    with pytest.raises(ValueError, match="seeds"):
        backend.generate(prompts, SAMPLE, seeds=[1])

    def refuse(*args, **kwargs):
        raise ValueError("no such engine")

    monkeypatch.setattr(vllm, "LLM", refuse)
    # the CPU has no sleep mode: a warning, then the engine's error
    with pytest.warns(UserWarning, match="sleep"), pytest.raises(ValueError, match="no such engine"):
        VLLMBackend(tiny_qwen3, enable_sleep_mode=True)


def test_sleep_and_wake_up_are_no_ops_without_sleep_mode(backend, prompts):
    before = tokens(backend.generate(prompts, GREEDY))
    backend.sleep(level=2)
    backend.wake_up(tags=["weights"])
    backend.wake_up(tags=["kv_cache"])
    assert not backend.sleep_mode and not backend.asleep
    assert tokens(backend.generate(prompts, GREEDY)) == before
    with pytest.raises(ValueError, match="sleep level"):
        backend.sleep(level=3)
    with pytest.raises(ValueError, match="wake_up tags"):
        backend.wake_up(tags=["everything"])


def test_request_seeds_can_be_left_out_in_training(backend, prompts, monkeypatch):
    sent = []
    generate = backend.llm.generate
    monkeypatch.setattr(backend.llm, "generate", lambda requests, params, **kw: sent.extend(params) or generate(requests, params, **kw))
    monkeypatch.setattr(backend, "request_seeds", False)
    outputs = backend.generate(prompts, SAMPLE, seeds=[1, 2, 3])
    assert [params.seed for params in sent] == [None, None, None]
    assert all(generation.error is None for (generation,) in outputs)
    monkeypatch.setattr(backend, "request_seeds", True)
    sent.clear()
    backend.generate(prompts, SAMPLE, seeds=[1, 2, 3])
    assert [params.seed for params in sent] == [1, 2, 3]


def perturbed(model, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + 0.5 * torch.randn(value.shape, generator=generator)
        for name, value in model.state_dict().items()
        if name != "lm_head.weight"  # tied to the embeddings
    }


def test_update_weights_in_place(backend, reference, prompts, tiny_qwen3, monkeypatch):
    from transformers import AutoModelForCausalLM

    # A prompt spanning full KV-cache blocks, which the prefix cache would serve stale.
    prompts = [*prompts, (prompts[2] * 10)[:200]]
    before = tokens(backend.generate(prompts, GREEDY))
    new_weights = perturbed(reference, seed=1)
    assert "lm_head.weight" not in new_weights
    changed = AutoModelForCausalLM.from_pretrained(tiny_qwen3, dtype=torch.float32).eval()
    changed.load_state_dict(new_weights, strict=False)  # lm_head follows the tied embeddings
    expected = [[row] for row in greedy_reference(changed, prompts, GREEDY.max_tokens)]
    try:
        backend.update_weights(new_weights)
        after = tokens(backend.generate(prompts, GREEDY))
        assert after == expected and after != before
        # The path for an engine in another process: a safetensors file and weights_path.
        monkeypatch.setattr(backend, "_tensors_in_process", lambda: False)
        backend.update_weights(reference.state_dict())  # lm_head.weight shares embeddings' storage
        assert tokens(backend.generate(prompts, GREEDY)) == before
        backend.update_weights(new_weights)
        assert tokens(backend.generate(prompts, GREEDY)) == expected
    finally:
        monkeypatch.undo()
        backend.update_weights(reference.state_dict())
    assert tokens(backend.generate(prompts, GREEDY)) == before
