"""GPU throughput and memory of a LoRA DPO recipe on a Qwen2.5-0.5B-shaped model (random weights).

Run on a lent H200 on 2026-12-04 (through bench/gpu_checks.sh; figures in docs/evaluator.md, "On a
GPU"); the script to run on one GPU. It builds a randomly
initialised model with Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads / 2 KV heads, vocab
151936; SmolLM2's tokenizer and chat template, whose ids all fit the vocabulary, so nothing is
downloaded), then runs the Qwen2.5-7B DPO-LoRA recipe's settings through vat-hf's DPO entry
point (TRL's DPOTrainer, reference = base with the adapter disabled) and reports

* tokens/s: tokens the trainer processed (TRL's ``num_tokens``, chosen + rejected) per second of
  training, after ``--warmup`` steps;
* seconds per optimizer step (median);
* peak GPU memory allocated and reserved (``torch.cuda.max_memory_*``) after warmup.

    python bench/bench_gpu_train.py                        # bf16, batch 4, 30 steps
    python bench/bench_gpu_train.py --batch-size 8 --gradient-checkpointing --steps 50
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml bench/bench_gpu_train.py  # per-GPU numbers
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "Qwen2.5-7B-Instruct" / "dpo" / "config_lora.yaml"
QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu")


def build_model(path: Path, seed: int = 0, tokenizer_dir=None) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from vat_hf.models import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or embedded_model_dir())
    config = Qwen2Config(**QWEN25_05B, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--output", help="also write the results as JSON here")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2's)")
    args = parser.parse_args(argv)

    import torch
    from transformers import TrainerCallback

    from vat_hf.train.common import build_trainer
    from vat_hf.train.config import parse_training_args
    from vat_hf.io import write_json

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_train.py needs a CUDA GPU (this machine has none)")
    work = Path(tempfile.mkdtemp(prefix="vat-bench-gpu-"))
    model_dir = build_model(work / "qwen2.5-0.5b-shaped", tokenizer_dir=args.tokenizer)
    overrides = ["--model_name_or_path", str(model_dir), "--output_dir", str(work / "out"), "--max_steps", str(args.steps),
                 "--per_device_train_batch_size", str(args.batch_size), "--gradient_accumulation_steps", "1",
                 "--max_length", str(args.max_length), "--activation_checkpointing", str(args.gradient_checkpointing).lower(),
                 "--save_strategy", "no", "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true"]
    script_args, training_args, model_args = parse_training_args("dpo", ["--config", str(RECIPE), *overrides])

    class Probe(TrainerCallback):
        def __init__(self, warmup):
            self.warmup, self.step_times, self.tokens, self._t = warmup, [], {}, None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == self.warmup:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            if state.global_step > self.warmup:
                self.step_times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.tokens[state.global_step] = float(logs["num_tokens"])

    trainer, _ = build_trainer("dpo", script_args, training_args, model_args)
    probe = Probe(args.warmup)
    trainer.add_callback(probe)
    trainer.train()
    measured_tokens = probe.tokens[max(probe.tokens)] - probe.tokens.get(args.warmup, 0.0)
    report = {
        "device": torch.cuda.get_device_name(),
        "model": "random Qwen2.5-0.5B-shaped (bf16), LoRA r=%d all-linear" % model_args.lora_r,
        "recipe": str(RECIPE.relative_to(REPO)),
        "batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps, "warmup": args.warmup,
        "gradient_checkpointing": args.gradient_checkpointing,
        "median_s_per_step": statistics.median(probe.step_times),
        "tokens_per_s": measured_tokens / sum(probe.step_times),
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }
    print(json.dumps(report, indent=2))
    if args.output:
        write_json(args.output, report)
    trainer.accelerator.end_training()
    return report


if __name__ == "__main__":
    main()
