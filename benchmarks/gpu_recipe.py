"""The SPIRAL recipe's learner on one GPU: precision, memory on an 80 GB card, padding, syncs.

Runs the project's own learner on a random-weight model of Qwen3-4B's real shape (nothing is
downloaded), from the root of a checkout::

    PYTHONUNBUFFERED=1 python benchmarks/gpu_recipe.py all        # about 8 minutes on an H100/H200
    python benchmarks/gpu_recipe.py precision memory80 --cap-gib 79.6
    python benchmarks/gpu_recipe.py all --smoke                   # tiny shapes on the CPU (a test runs this)

Checks (each prints a block of lines starting with its name):
  precision  one update at lr 1e-6 of a model loaded in bfloat16: share of weights that moved
             (the learner's float32 master weights), against bfloat16 weights stepped in place
  memory80   peak of one update at the recipe's settings (configs/qwen3-4b-base.yaml) under a
             per-process cap of --cap-gib (an 80 GB card on a bigger one), with vLLM asleep
             as a placeholder allocation; then the rollout phase: what the learner keeps plus
             vLLM awake at the recipe's gpu_memory_utilization
  padding    seconds per update of unequal-length samples (recipe-like lengths) with the
             learner's per-micro-batch padding, against one micro-batch padded to the batch's
             longest sample (what every micro-batch cost before), projected to 128 samples
  leftpad    a left-padded batch: finite log-probs equal to unpadded passes, finite gradients
  lora       the generator's weights built with LoRA: frozen base bit-identical after many syncs,
             against peft's merge/unmerge round trip in place
  syncs      host syncs per optimizer step (torch.cuda sync debug mode)
  vllm       only where vllm imports: sleep level 1 against 2, wake order, reload, log-probs
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace

import torch

sys.path.insert(0, os.getcwd())  # the checkout's spiral packages, imported inside the checks

GiB = 2**30
SMOKE = False
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def qwen3_4b_config(layers: int | None = None):
    from transformers import Qwen3Config

    if SMOKE:
        return Qwen3Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                           max_position_embeddings=40960)
    return Qwen3Config(vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                       num_hidden_layers=layers or 36, num_attention_heads=32, num_key_value_heads=8,
                       head_dim=128, tie_word_embeddings=True, max_position_embeddings=40960,
                       rope_theta=1_000_000, rms_norm_eps=1e-6)


def random_model(dtype: torch.dtype, layers: int | None = None) -> torch.nn.Module:
    """Qwen3-4B's shape with random weights, as ``load_model`` would hold it."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    kwargs = {} if DEV == "cuda" else {"attn_implementation": "sdpa"}
    with torch.device(DEV):
        model = AutoModelForCausalLM.from_config(qwen3_4b_config(layers), dtype=dtype, **kwargs)
    return model.eval()


@dataclass
class Sample:
    prompt_token_ids: list[int]
    response_token_ids: list[int]
    logprobs: list[float] | None = None


def samples(lengths: list[tuple[int, int]], vocab: int) -> list[Sample]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for prompt, response in lengths:
        if SMOKE:
            prompt, response = max(2, prompt // 100), max(1, response // 100)
        out.append(Sample(torch.randint(10, vocab - 10, (prompt,), generator=generator).tolist(),
                          torch.randint(10, vocab - 10, (response,), generator=generator).tolist()))
    return out


def recipe_lengths(count: int) -> list[tuple[int, int]]:
    """Turn lengths like the recipe's: prompts 300-900 tokens, responses mostly 200-1,500 with
    a tail to the 4,096-token limit (one sample cut off there)."""
    generator = torch.Generator().manual_seed(2)
    prompts = torch.randint(300, 901, (count,), generator=generator)
    responses = (200 * torch.exp(torch.rand(count, generator=generator) * 2.5)).clamp(max=4096)
    responses[0] = 4096
    return [(int(p), int(r)) for p, r in zip(prompts, responses)]


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    gc.collect()
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def gib(value: int) -> str:
    return f"{value / GiB:.1f}" if DEV == "cuda" else "n/a"


def allocated() -> int:
    return torch.cuda.memory_allocated() if DEV == "cuda" else 0


def peak() -> int:
    return torch.cuda.max_memory_allocated() if DEV == "cuda" else 0


def recipe():
    from spiral_train.config import load_config

    return load_config("configs/qwen3-4b-base.yaml")


def learner_for(model: torch.nn.Module, **changes):
    from spiral_train.learner import Learner

    config = replace(recipe().learner, **changes)
    if SMOKE:
        config = replace(config, micro_batch_tokens=config.micro_batch_tokens // 100)
    return Learner(model, config, pad_id=0)


# -- checks --------------------------------------------------------------------------------------


def check_precision(args) -> None:
    model = random_model(torch.bfloat16, layers=None if args.full else 4)
    start = {n: p.detach().float().cpu() for n, p in model.named_parameters()}
    batch = samples([(600, 300)] * 4, model.config.vocab_size)
    learner = learner_for(model, epochs=1)
    learner.update(batch, [1.0, -1.0, 0.5, -0.5])
    print("[precision] " + moved(model, start, "learner (float32 master weights, bfloat16 autocast)"))
    del learner, model
    reset_peak()
    model = random_model(torch.bfloat16, layers=None if args.full else 4)  # before: bf16 stepped in place
    start = {n: p.detach().float().cpu() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.95))
    from spiral_train.learner import pack, token_logprobs

    model.train()
    packed = pack(batch, [1.0, -1.0, 0.5, -0.5], 0).to(DEV)
    (-(token_logprobs(model, packed) * packed.advantages * packed.mask).sum() / 4096).backward()
    optimizer.step()
    print("[precision] " + moved(model, start, "bfloat16 weights and AdamW states stepped in place (before)"))
    del model, optimizer
    reset_peak()


def moved(model: torch.nn.Module, start: dict[str, torch.Tensor], label: str) -> str:
    changed = total = norm_changed = norm_total = 0
    for name, parameter in model.named_parameters():
        differs = parameter.detach().float().cpu() != start[name]
        changed, total = changed + int(differs.sum()), total + differs.numel()
        if "norm" in name:
            norm_changed, norm_total = norm_changed + int(differs.sum()), norm_total + differs.numel()
    return (f"{label}: {100 * changed / total:.2f}% of weights changed after one update at lr 1e-6, "
            f"RMSNorm weights {100 * norm_changed / max(norm_total, 1):.2f}%")


def check_memory80(args) -> None:
    config = recipe()
    total = torch.cuda.get_device_properties(0).total_memory if DEV == "cuda" else 0
    cap = args.cap_gib * GiB
    if DEV == "cuda" and cap < total:
        torch.cuda.set_per_process_memory_fraction(cap / total)
    asleep, awake = int(1.5 * GiB), int(config.generator.gpu_memory_utilization * cap)
    reset_peak()
    model = random_model(torch.bfloat16)
    learner = learner_for(model)
    batch = samples(recipe_lengths(16), model.config.vocab_size)
    placeholder = torch.empty(asleep if DEV == "cuda" else 0, dtype=torch.uint8, device=DEV)  # vLLM asleep
    reset_peak()
    begin = time.perf_counter()
    try:
        learner.update(batch, [1.0, -1.0] * 8)
        sync()
        print(f"[memory80] update of 16 recipe-length samples (micro-batches of {learner.config.micro_batch_size} "
              f"sequences / {learner.config.micro_batch_tokens} tokens): peak {gib(peak())} GiB with a "
              f"{gib(asleep)} GiB placeholder for vLLM asleep, cap {args.cap_gib} GiB; {time.perf_counter() - begin:.1f} s")
    except torch.cuda.OutOfMemoryError as error:
        print(f"[memory80] update: CUDA out of memory under the {args.cap_gib} GiB cap: {str(error).splitlines()[0]}")
    del placeholder
    reset_peak()
    kept = allocated()
    try:
        vllm = torch.empty(awake if DEV == "cuda" else 0, dtype=torch.uint8, device=DEV)
        fits = "fits"
        del vllm
    except torch.cuda.OutOfMemoryError:
        fits = "does NOT fit"
    print(f"[memory80] between updates the learner keeps {gib(kept)} GiB (float32 weights + AdamW states, no "
          f"gradients); with vLLM awake at {config.generator.gpu_memory_utilization} of the cap "
          f"({gib(awake)} GiB) the rollout phase {fits} under {args.cap_gib} GiB")
    if DEV == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0)
    del model, learner
    reset_peak()


def check_padding(args) -> None:
    from spiral_train.learner import pack, token_logprobs

    model = random_model(torch.bfloat16)
    learner = learner_for(model, epochs=1)
    count = 8 if SMOKE else args.samples
    batch = samples(recipe_lengths(count), model.config.vocab_size)
    advantages = [1.0, -1.0] * (count // 2)
    learner.update(batch[:2], advantages[:2])  # warm-up
    seconds = []
    for _ in range(2):
        sync()
        metrics = learner.update(batch, advantages)
        sync()
        seconds.append(metrics["learner_seconds"])
    per_update = min(seconds)
    print(f"[padding] {count} recipe-length samples, 1 epoch, per-micro-batch padding: {per_update:.1f} s "
          f"({metrics['learner_padding']:.0%} padding), {per_update * 128 / count * 2:.0f} s projected for the "
          f"recipe's 128 samples x 2 epochs")
    # before: every micro-batch of 4 padded to the batch's longest sample and widest response
    model.train()
    length = max(len(s.prompt_token_ids) + len(s.response_token_ids) for s in batch)
    width = max(len(s.response_token_ids) for s in batch)
    micro = pack([Sample([11] * (length - width), [12] * width)] * 4, advantages[:4], 0).to(DEV)
    for _ in range(2):
        sync()
        begin = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV == "cuda"):
            logprobs = token_logprobs(model, micro)
        (logprobs * micro.advantages).sum().backward()
        sync()
        micro_seconds = time.perf_counter() - begin
        model.zero_grad(set_to_none=True)
    print(f"[padding] before: one micro-batch of 4 x {length} tokens (the batch's longest) took {micro_seconds:.1f} s; "
          f"every micro-batch cost that: {micro_seconds * count / 4:.1f} s per epoch here, "
          f"{micro_seconds * 128 / 4 * 2:.0f} s projected for 128 samples x 2 epochs")
    del model, learner
    reset_peak()


def check_leftpad(args) -> None:
    from spiral_train.learner import pack, token_logprobs
    from spiral_train.loss import LossConfig, policy_loss

    model = random_model(torch.bfloat16)
    batch = samples([(50, 20), (900, 1500), (300, 5)], model.config.vocab_size)
    packed = pack(batch, [1.0, -1.0, 1.0], 0).to(DEV)
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    logprobs = token_logprobs(model, packed)
    loss, _ = policy_loss(logprobs, logprobs.detach(), packed.advantages, packed.mask, LossConfig())
    loss.backward()
    grads = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    model.eval()
    worst = 0.0
    with torch.no_grad():
        for i, sample in enumerate(batch):
            alone = pack([sample], [1.0], 0).to(DEV)
            n = len(sample.response_token_ids)
            worst = max(worst, float((token_logprobs(model, alone)[0] - logprobs[i, -n:].detach()).abs().max()))
    print(f"[leftpad] all positions finite: {bool(torch.isfinite(logprobs).all())}; loss finite: "
          f"{bool(torch.isfinite(loss))}; grads finite: {grads}; max |padded - unpadded| log-prob: {worst:.3f}")
    del model
    reset_peak()


def check_lora(args) -> None:
    from peft import LoraConfig, get_peft_model

    from spiral_train.model import generator_weights

    warnings.filterwarnings("ignore")
    steps = 5 if SMOKE else args.lora_steps
    for label, sync_weights in (("generator_weights (out of place)", generator_weights), ("peft merge/unmerge in place (before)", merge_round_trip)):
        model = get_peft_model(random_model(torch.bfloat16, layers=None if args.full else 2),
                               LoraConfig(r=32, lora_alpha=64, target_modules="all-linear", task_type="CAUSAL_LM"))
        layer = model.base_model.model.model.layers[0].mlp.down_proj
        start = layer.base_layer.weight.detach().clone()
        for _ in range(steps):
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if "lora_B" in name:
                        parameter.add_(torch.randn_like(parameter) * 5e-5)
            sent = sync_weights(model)["base_model.model.model.layers.0.mlp.down_proj.weight".removeprefix("base_model.model.")]
        exact = start.float() + layer.get_delta_weight("default").float()
        drift = layer.base_layer.weight.detach().float() - start.float()
        print(f"[lora] {label}, {steps} syncs: frozen base changed in {100 * float((drift != 0).float().mean()):.1f}% "
              f"of entries; weights sent equal the exactly rounded merge in {100 * float((sent == exact.to(sent.dtype)).float().mean()):.1f}%")
        del model
        reset_peak()


def merge_round_trip(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model.merge_adapter()
    try:
        return {k.replace(".base_layer", ""): v.detach().clone() for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}
    finally:
        model.unmerge_adapter()


def check_syncs(args) -> None:
    if DEV != "cuda":
        print("[syncs] needs CUDA: skipped")
        return
    model = random_model(torch.bfloat16, layers=4)
    learner = learner_for(model, epochs=2)
    batch = samples(recipe_lengths(8), model.config.vocab_size)
    learner.update(batch, [1.0, -1.0] * 4)  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = learner.update(batch, [1.0, -1.0] * 4)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    print(f"[syncs] {len(syncs)} synchronizing CUDA calls in one update of {metrics['optimizer_steps']} optimizer "
          f"steps and {learner.config.micro_batch_size}-sequence micro-batches")
    del model, learner
    reset_peak()


def check_vllm(args) -> None:
    try:
        import vllm
    except ImportError:
        print("[vllm] vllm is not installed here: skipped (sleep, wake and reload need a machine with vLLM)")
        return
    if DEV != "cuda":
        print("[vllm] needs CUDA (sleep mode): skipped")
        return
    from spiral_agents.llm.vllm_backend import add_tied_output_layer
    from spiral_train.learner import pack, token_logprobs
    from spiral_train.model import generator_weights

    config = qwen3_4b_config()
    folder = tempfile.mkdtemp(prefix="qwen3-4b-shape-")
    config.architectures = ["Qwen3ForCausalLM"]
    config.torch_dtype = "bfloat16"
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config.to_dict(), file)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    def used() -> str:
        sync()
        free, total = torch.cuda.mem_get_info()
        return f"{(total - free) / GiB:.1f} GiB used"

    model = random_model(torch.bfloat16)
    learner = learner_for(model, epochs=1)
    # what VLLMBackend does, on an engine without a tokenizer (random weights, token ids only)
    llm = vllm.LLM(folder, load_format="dummy", skip_tokenizer_init=True, max_model_len=12800,
                   gpu_memory_utilization=recipe().generator.gpu_memory_utilization, enable_sleep_mode=True, seed=0)
    print(f"[vllm] learner (float32 master weights) and engine up: {used()}")
    prompt = {"prompt_token_ids": list(range(100, 400))}
    greedy = vllm.SamplingParams(max_tokens=64, temperature=0, detokenize=False, logprobs=0)
    batch = samples(recipe_lengths(8), model.config.vocab_size)
    for level in (1, 2):
        begin = time.perf_counter()
        llm.sleep(level=level)
        print(f"[vllm] asleep at level {level} ({time.perf_counter() - begin:.1f} s): {used()}")
        learner.update(batch, [1.0, -1.0] * 4)
        print(f"[vllm] after an update: {used()} (torch reserved {torch.cuda.memory_reserved() / GiB:.1f} GiB)")
        torch.cuda.empty_cache()
        begin = time.perf_counter()
        llm.wake_up(tags=["weights"])
        woke = time.perf_counter() - begin
        begin = time.perf_counter()
        weights = dict(generator_weights(model))
        add_tied_output_layer(weights)
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(weights.items())})
        llm.reset_prefix_cache()
        sync()
        reloaded = time.perf_counter() - begin
        torch.cuda.empty_cache()
        llm.wake_up(tags=["kv_cache"])
        print(f"[vllm] level {level}: weights woke in {woke:.1f} s, reload {reloaded:.1f} s, KV cache woke: {used()}")
        output = llm.generate([prompt], greedy, use_tqdm=False)[0].outputs[0]
        sample = Sample(prompt["prompt_token_ids"], list(output.token_ids))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            ours = token_logprobs(model, pack([sample], [1.0], 0).to(DEV))[0].float().cpu()
        theirs = torch.tensor([step[token].logprob for step, token in zip(output.logprobs, output.token_ids)])
        print(f"[vllm] level {level}: vLLM vs learner log-probs of vLLM's greedy tokens: max |diff| "
              f"{float((ours - theirs).abs().max()):.3f}, mean {float((ours - theirs).abs().mean()):.4f}")


CHECKS = {"precision": check_precision, "memory80": check_memory80, "padding": check_padding,
          "leftpad": check_leftpad, "lora": check_lora, "syncs": check_syncs, "vllm": check_vllm}


def main() -> None:
    global SMOKE, DEV
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="+", choices=[*CHECKS, "all"])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (a syntax and logic check)")
    parser.add_argument("--full", action="store_true", help="all 36 layers for precision and lora")
    parser.add_argument("--samples", type=int, default=32, help="padding: samples per timed update")
    parser.add_argument("--lora-steps", type=int, default=200)
    parser.add_argument("--cap-gib", type=float, default=79.6, help="memory80: usable memory of the card emulated")
    args = parser.parse_args()
    SMOKE = args.smoke
    if SMOKE:
        DEV = "cpu"
    names = list(CHECKS) if "all" in args.checks else args.checks
    name = torch.cuda.get_device_name(0) if DEV == "cuda" else "CPU"
    print(f"device {DEV} ({name}), torch {torch.__version__}")
    times = []
    for check in names:
        begin = time.perf_counter()
        try:
            CHECKS[check](args)
        except torch.cuda.OutOfMemoryError as error:  # a finding, not a failure of the script
            print(f"[{check}] CUDA out of memory: {str(error).splitlines()[0]}")
            reset_peak()
        times.append(time.perf_counter() - begin)
        print(f"[{check}] {times[-1]:.0f} s")
    print(f"total {sum(times):.0f} s (median check {statistics.median(times):.0f} s)")


if __name__ == "__main__":
    main()
