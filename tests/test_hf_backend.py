"""TransformersBackend on the tiny offline Qwen3: batching, sampling, log-probs, stops, updates."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from spiral_agents.llm.backend import Backend, SamplingConfig, UpdatableBackend
from spiral_agents.llm.hf_backend import TransformersBackend

TEXTS = [
    "Tic tac toe. Legal moves: [0] [1] [2] [3]",
    "x",
    "The best move is \\boxed{4}. Let me think step by step about this game and its rules.",
    "I will offer a trade.",
]
SAMPLE = SamplingConfig(temperature=1.0, max_tokens=24)
GREEDY = SamplingConfig(temperature=0, max_tokens=16)


@pytest.fixture(scope="module")
def backend(tiny_qwen3: Path) -> TransformersBackend:
    return TransformersBackend(str(tiny_qwen3), device="cpu")


@pytest.fixture(scope="module")
def prompts(backend: TransformersBackend) -> list[list[int]]:
    return [backend.tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]


def tokens(outputs) -> list[list[list[int]]]:
    return [[generation.token_ids for generation in per_prompt] for per_prompt in outputs]


def perturbed(model, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: value + 0.05 * torch.randn(value.shape, generator=generator)
        for name, value in model.state_dict().items()
    }


def test_implements_the_protocols(backend):
    assert isinstance(backend, Backend) and isinstance(backend, UpdatableBackend)
    assert backend.stop_ids == {0, 2}  # <|im_end|> (eos), <|endoftext|> (pad, generation config)
    assert not backend.model.training


def test_shapes_and_decode_round_trip(backend, prompts):
    outputs = backend.generate(prompts, SAMPLE, seeds=[1, 2, 3, 4])
    assert [len(per_prompt) for per_prompt in outputs] == [1, 1, 1, 1]
    for (generation,) in outputs:
        assert generation.error is None and generation.finish_reason in ("stop", "length")
        assert 1 <= len(generation.token_ids) <= SAMPLE.max_tokens
        assert len(generation.logprobs) == len(generation.token_ids)
        assert all(lp <= 0 for lp in generation.logprobs)
        shown = generation.token_ids
        if generation.finish_reason == "stop":
            shown = shown[:-1]
        assert generation.text == backend.tokenizer.decode(shown, skip_special_tokens=True)
    no_logprobs = SamplingConfig(temperature=1.0, max_tokens=24, logprobs=False)
    again = backend.generate(prompts, no_logprobs, seeds=[1, 2, 3, 4])
    assert tokens(again) == tokens(outputs)
    assert all(generation.logprobs is None for (generation,) in again)


def test_greedy_matches_transformers_generate_with_left_padding(backend, prompts):
    greedy = SamplingConfig(temperature=0, max_tokens=20)
    outputs = backend.generate(prompts, greedy)
    batch = backend.tokenizer(
        TEXTS, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )
    assert len(set(batch["attention_mask"].sum(-1).tolist())) == len(TEXTS)  # really padded
    with torch.inference_mode():
        reference = backend.model.generate(**batch, do_sample=False, max_new_tokens=20)
    for row, (generation,) in zip(reference[:, batch["input_ids"].shape[1] :].tolist(), outputs):
        stop = next((i for i, token in enumerate(row) if token in backend.stop_ids), None)
        assert generation.token_ids == (row if stop is None else row[: stop + 1])
        assert generation.finish_reason == ("length" if stop is None else "stop")
    alone = [backend.generate([prompt], greedy)[0] for prompt in prompts]
    assert tokens(alone) == tokens(outputs)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(backend, prompts):
    first = backend.generate(prompts, SAMPLE, seeds=[11, 12, 13, 14])
    assert tokens(backend.generate(prompts, SAMPLE, seeds=[11, 12, 13, 14])) == tokens(first)
    alone = backend.generate([prompts[2]], SAMPLE, seeds=[13])
    assert tokens(alone)[0] == tokens(first)[2]
    small_batches = TransformersBackend(backend.model, tokenizer=backend.tokenizer, batch_size=3)
    mixed = small_batches.generate([prompts[3], prompts[2], prompts[0]], SAMPLE, seeds=[99, 13, 5])
    assert tokens(mixed)[1] == tokens(first)[2]
    assert tokens(backend.generate(prompts, SAMPLE, seeds=[21, 22, 23, 24])) != tokens(first)


def test_n_samples_are_seeded_like_vllm(backend, prompts):
    sampling = SamplingConfig(temperature=1.0, max_tokens=16, n=3)
    outputs = backend.generate(prompts[:2], sampling, seeds=[5, None])
    assert [len(per_prompt) for per_prompt in outputs] == [3, 3]
    single = SamplingConfig(temperature=1.0, max_tokens=16)
    for j, generation in enumerate(outputs[0]):  # sample j is seeded with seed + j
        (alone,) = backend.generate([prompts[0]], single, seeds=[5 + j])[0]
        assert generation.token_ids == alone.token_ids
    assert len({tuple(generation.token_ids) for generation in outputs[0]}) == 3


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingConfig(temperature=0.7, top_k=20, top_p=0.9, max_tokens=24),
        SamplingConfig(temperature=1.3, max_tokens=24),
        SamplingConfig(temperature=0, max_tokens=12),
    ],
)
def test_logprobs_equal_a_full_forward_pass(backend, prompts, sampling):
    outputs = backend.generate(prompts, sampling, seeds=[1, 2, 3, 4])
    temperature = sampling.temperature or 1.0
    for prompt, (generation,) in zip(prompts, outputs):
        sequence = torch.tensor([prompt + generation.token_ids])
        with torch.inference_mode():
            logits = backend.model(sequence).logits[0, len(prompt) - 1 : -1].float()
        response = sequence[0, len(prompt) :, None]
        expected = (logits / temperature).log_softmax(-1).gather(-1, response)[:, 0]
        actual = torch.tensor(generation.logprobs)
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_a_shared_prefix_is_prefilled_once_with_the_same_results(backend, monkeypatch):
    rules = "You play a two-player zero-sum game of tic tac toe. " * 8
    texts = [rules + "Board: X at 4.", rules + "Board: O at 0, X at 8, 2.", rules + "x"]
    prompts = [backend.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    prompts.append(prompts[0][:40])  # a prompt that is all shared prefix
    lengths = []
    forward = backend.model.forward
    monkeypatch.setattr(
        backend.model, "forward", lambda **kw: lengths.append(kw["input_ids"].shape) or forward(**kw)
    )
    sampling = SamplingConfig(temperature=1.0, max_tokens=12, logprobs=True)
    batched = backend.generate(prompts, sampling, seeds=[1, 2, 3, 4])
    assert lengths[0] == (1, 39)  # the prefix once, up to the shortest prompt's last token
    assert lengths[1][0] == 4 and lengths[1][1] == max(map(len, prompts)) - 39
    monkeypatch.undo()
    for i, prompt in enumerate(prompts):
        (alone,) = backend.generate([prompt], sampling, seeds=[i + 1])[0]
        assert batched[i][0].token_ids == alone.token_ids
        torch.testing.assert_close(batched[i][0].logprobs, alone.logprobs, atol=1e-4, rtol=0)


def test_prompts_of_different_games_share_their_own_prefixes_in_one_batch(backend, monkeypatch):
    texts = [f"{rules * 30} {board}" for rules in ("Tic tac toe. ", "Kuhn poker. ")
             for board in ("X at 4.", "O at 0, X at 8.", "empty")]
    prompts = [backend.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    prompts.append(backend.tokenizer("a lone prompt", add_special_tokens=False)["input_ids"])
    calls = []
    forward = backend.model.forward
    monkeypatch.setattr(
        backend.model, "forward", lambda **kw: calls.append(kw["input_ids"].shape) or forward(**kw)
    )
    sampling = SamplingConfig(temperature=1.0, max_tokens=8, logprobs=True)
    batched = backend.generate(prompts, sampling, seeds=list(range(7)))
    # Two shared prefixes, three groups' own tokens, then one decoding loop for all seven.
    assert sorted(shape[0] for shape in calls[:5]) == [1, 1, 1, 3, 3]
    assert tuple(calls[5]) == (7, 1)
    monkeypatch.undo()
    for i, prompt in enumerate(prompts):
        (alone,) = backend.generate([prompt], sampling, seeds=[i])[0]
        assert batched[i][0].token_ids == alone.token_ids
        torch.testing.assert_close(batched[i][0].logprobs, alone.logprobs, atol=1e-4, rtol=0)


def test_prefix_groups_split_only_where_sharing_saves_work():
    from spiral_agents.llm.hf_backend import SPLIT_SAVING, _prefix_groups, _Row

    game_a = [[1] * 1000 + [2, i] for i in range(3)]
    game_b = [[3] * 1000 + [4, i] for i in range(3)]
    short = [[5, i] for i in range(3)] + [[6, i] for i in range(3)]
    rows = sorted((_Row(k, 0, ids, None) for k, ids in enumerate(game_a + game_b + short)),
                  key=lambda row: row.ids)
    groups = [[row.prompt for row in group] for group in _prefix_groups(rows)]
    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9, 10, 11]]  # short rows stay together
    assert 2 < SPLIT_SAVING < 1000 * 2


def test_top_k_and_top_p_truncate_the_sampling_distribution(backend, prompts):
    greedy = tokens(backend.generate(prompts, GREEDY))
    top1 = SamplingConfig(temperature=1.0, top_k=1, max_tokens=16)
    tiny_nucleus = SamplingConfig(temperature=1.0, top_p=1e-6, max_tokens=16)
    assert tokens(backend.generate(prompts, top1, seeds=[1, 2, 3, 4])) == greedy
    assert tokens(backend.generate(prompts, tiny_nucleus, seeds=[1, 2, 3, 4])) == greedy


def test_max_tokens_and_stop_tokens(backend, prompts):
    short = SamplingConfig(temperature=1.0, max_tokens=5)
    (cut,) = backend.generate([prompts[0]], short, seeds=[3])[0]
    assert cut.finish_reason == "length" and len(cut.token_ids) == 5
    (full,) = backend.generate([prompts[0]], SAMPLE, seeds=[3])[0]
    assert full.token_ids[:5] == cut.token_ids
    stop_token = full.token_ids[6]
    first = full.token_ids.index(stop_token)
    stopping = SamplingConfig(temperature=1.0, max_tokens=24, stop_token_ids=(stop_token,))
    (stopped,) = backend.generate([prompts[0]], stopping, seeds=[3])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == full.token_ids[: first + 1]  # the stop token is kept, as in vLLM
    assert len(stopped.logprobs) == first + 1
    decoded = backend.tokenizer.decode(full.token_ids[:first], skip_special_tokens=True)
    assert stopped.text == decoded  # but not shown in the text


def test_chat_messages_use_the_chat_template(backend):
    messages = [{"role": "user", "content": "Your move?"}]
    rendered = backend.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    ids = backend.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tokens(backend.generate([messages], GREEDY)) == tokens(backend.generate([ids], GREEDY))


def test_a_bad_request_fails_alone(backend, prompts):
    sampling = SamplingConfig(temperature=0, max_tokens=8)
    expected = tokens(backend.generate([prompts[0], prompts[1]], sampling))
    outputs = backend.generate([prompts[0], [backend.vocab_size + 3], [], prompts[1]], sampling)
    reasons = [per_prompt[0].finish_reason for per_prompt in outputs]
    assert reasons == ["length", "error", "error", "length"]
    assert "vocabulary" in outputs[1][0].error and "empty" in outputs[2][0].error
    assert [tokens(outputs)[0], tokens(outputs)[3]] == expected

    poison = prompts[2][3]

    def fail_on_poison(module, args):
        if (args[0] == poison).any():
            raise RuntimeError("poisoned prompt")

    hook = backend.model.get_input_embeddings().register_forward_pre_hook(fail_on_poison)
    try:
        two_each = SamplingConfig(temperature=0, max_tokens=8, n=2)
        outputs = backend.generate([prompts[0], prompts[2], prompts[1]], two_each)
    finally:
        hook.remove()
    assert [generation.finish_reason for generation in outputs[1]] == ["error", "error"]
    assert "poisoned prompt" in outputs[1][0].error
    assert [tokens(outputs)[0][:1], tokens(outputs)[2][:1]] == expected


def test_a_token_budget_sizes_each_batch_and_changes_no_output(backend, prompts, monkeypatch):
    expected = backend.generate(prompts, SAMPLE, seeds=[1, 2, 3, 4])
    longest = max(map(len, prompts))
    budget = 2 * (longest + SAMPLE.max_tokens)  # two rows of the longest prompt at most
    bounded = TransformersBackend(backend.model, tokenizer=backend.tokenizer, max_batch_tokens=budget)
    chunks = []
    run = bounded._run_chunk
    monkeypatch.setattr(bounded, "_run_chunk", lambda chunk, sampling: chunks.append(chunk) or run(chunk, sampling))
    assert tokens(bounded.generate(prompts, SAMPLE, seeds=[1, 2, 3, 4])) == tokens(expected)
    assert len(chunks) >= 2 and sum(map(len, chunks)) == len(prompts)
    for chunk in chunks:  # the preallocated KV cache: rows x (longest prompt + new tokens)
        assert len(chunk) == 1 or len(chunk) * (max(len(r.ids) for r in chunk) + SAMPLE.max_tokens) <= budget
    tight = TransformersBackend(backend.model, tokenizer=backend.tokenizer, max_batch_tokens=1)
    assert tokens(tight.generate(prompts, SAMPLE, seeds=[1, 2, 3, 4])) == tokens(expected)  # one row each


def test_bad_configuration_raises(tiny_qwen3, backend, prompts):
    with pytest.raises(ValueError, match="cannot load"):
        TransformersBackend(str(tiny_qwen3 / "missing"), device="cpu")
    with pytest.raises(ValueError, match="batch_size"):
        TransformersBackend(str(tiny_qwen3), batch_size=0)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        TransformersBackend(str(tiny_qwen3), max_batch_tokens=0)
    with pytest.raises(ValueError, match="dtype"):
        TransformersBackend(str(tiny_qwen3), dtype="int8")
    with pytest.raises(ValueError, match="seeds"):
        backend.generate(prompts, SAMPLE, seeds=[1])


def test_update_weights_changes_outputs_and_handles_tied_embeddings(tiny_qwen3, prompts):
    backend = TransformersBackend(str(tiny_qwen3), device="cpu")
    before = tokens(backend.generate(prompts, GREEDY))
    new_weights = perturbed(backend.model, seed=1)
    assert "lm_head.weight" in new_weights
    new_weights["lm_head.weight"] = new_weights["model.embed_tokens.weight"]
    backend.update_weights(new_weights)
    after = tokens(backend.generate(prompts, GREEDY))
    assert after != before

    reloaded = TransformersBackend(str(tiny_qwen3), device="cpu")
    model = reloaded.model
    without_head = {name: value for name, value in new_weights.items() if name != "lm_head.weight"}
    reloaded.update_weights(without_head)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(model.lm_head.weight, new_weights["model.embed_tokens.weight"])
    assert tokens(reloaded.generate(prompts, GREEDY)) == after

    with pytest.raises(ValueError, match="unknown keys"):
        reloaded.update_weights({**without_head, "model.extra.weight": torch.zeros(1)})
    without_norm = dict(without_head)
    del without_norm["model.norm.weight"]
    with pytest.raises(ValueError, match="lacks"):
        reloaded.update_weights(without_norm)
    with pytest.raises(ValueError, match="shape"):
        reloaded.update_weights({**without_head, "model.norm.weight": torch.zeros(3)})
    assert tokens(reloaded.generate(prompts, GREEDY)) == after  # nothing half-loaded


def test_shares_the_trainers_module(tiny_qwen3, prompts):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen3))
    model.train()
    backend = TransformersBackend(model, tokenizer=str(tiny_qwen3))
    assert backend.model is model and backend.device == torch.device("cpu")
    before = tokens(backend.generate(prompts, GREEDY))
    assert model.training  # the trainer's mode is restored
    backend.update_weights(model.state_dict())  # its own tensors: a no-op
    assert tokens(backend.generate(prompts, GREEDY)) == before
    with torch.no_grad():
        for name, value in perturbed(model, seed=2).items():
            model.get_parameter(name).copy_(value)
    assert tokens(backend.generate(prompts, GREEDY)) != before  # the trainer's step shows at once
