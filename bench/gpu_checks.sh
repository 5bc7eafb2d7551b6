#!/usr/bin/env bash
# The GPU checks, as one command on a lent device machine (made ready here by bench/gpu_kit.sh,
# sent with carry [".whl"]); about 2.5 minutes on the lent H200 (2026-12-04), before the two
# diagnoses below were added (they add an estimated minute; not yet run on a GPU):
#   1. bench_gpu_eval.py: a random Qwen2.5-7B-shaped model in bf16, ~160-token items, our
#      evaluator against a bare `model(input_ids, logits_to_keep=1)` loop (goal >= 0.85x); then
#      the same with 10 items to a scene, and on a Qwen2.5-0.5B shape; each also counts the
#      synchronizing CUDA calls by source line and the GPU's busy fraction of each side's wall time
#      (one untimed run each), and times prefix reuse `auto` once more with every item prepared
#      before the first batch (`one_wave`: a fourth run in each repeat, not yet run on a GPU);
#      then memory_check.py: a real CUDA out-of-memory error, split and judged on (not yet run);
#   2. bench_gpu_train.py: DPO-LoRA steps/s and peak memory on a Qwen2.5-0.5B shape;
#   3. bench_vllm.py (where vLLM is installed): the transformers evaluator, vLLM offline and vLLM
#      served on the same 440 items of a SmolLM2-135M-shaped random model in bf16: items/s and the
#      backends' agreement. The lent H200's image has no vLLM, and vLLM's CUDA wheel is far larger
#      than what one call may carry (64 MiB), so there it prints that it was skipped; on a GPU box
#      with vLLM installed it runs.
# Results and logs go to $OUT (the device tool brings them back; 8 files, its limit), else outputs/bench.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
# The tokenizer keeps its own threads (as a user's run does): the evaluator prepares each next
# wave of items on a worker thread while the GPU runs the current one.
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-outputs/bench}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, trl, peft, accelerate, datasets, pyarrow; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
timeout 360 python3 bench/bench_gpu_eval.py --tokenizer .whl/smollm2-tokenizer --n-items 2048 --repeats 3 2>&1 | tee "$OUT/gpu_eval.log"
eval_rc=${PIPESTATUS[0]}
# The same, with 10 items to a scenario (the scene prefixes run once per scene), and on a 0.5B
# shape, where the GPU is fast enough for the evaluator's own host work to show.
timeout 260 python3 bench/bench_gpu_eval.py --tokenizer .whl/smollm2-tokenizer --n-items 2048 --per-scene 10 --repeats 3 \
    --output-name gpu_eval_scenes.json 2>&1 | tee -a "$OUT/gpu_eval.log"
[ "${PIPESTATUS[0]}" = 0 ] || eval_rc=1
timeout 160 python3 bench/bench_gpu_eval.py --small --tokenizer .whl/smollm2-tokenizer --n-items 2048 --repeats 3 \
    --output-name gpu_eval_small.json >> "$OUT/gpu_eval.log" 2>&1
[ "$?" = 0 ] || eval_rc=1
# A real out-of-memory error: the evaluator splits the batch and judges on (memory_check.py; an
# estimated 30-60 s, not yet run on a GPU); its report goes to the end of gpu_eval.log.
timeout 150 python3 bench/memory_check.py --tokenizer .whl/smollm2-tokenizer >> "$OUT/gpu_eval.log" 2>&1
[ "$?" = 0 ] || eval_rc=1
timeout 180 python3 bench/bench_gpu_train.py --tokenizer .whl/smollm2-tokenizer --output "$OUT/gpu_train.json" 2>&1 | tail -40 | tee "$OUT/gpu_train.log"
train_rc=${PIPESTATUS[0]}
vllm_rc=0
if python3 -c "import vllm" 2>/dev/null; then
    timeout 480 python3 bench/bench_vllm.py --random-model --tokenizer .whl/smollm2-tokenizer --device cuda \
        --dtype bfloat16 --threads 8 --n-items 0 --repeats 3 --concurrency 64 --output "$OUT/vllm_side_by_side.json" \
        2>&1 | tail -30 | tee "$OUT/vllm.log"
    vllm_rc=${PIPESTATUS[0]}
else
    echo "vllm is not installed here: bench_vllm.py skipped" | tee "$OUT/vllm.log"
fi
echo "bench_gpu_eval rc=$eval_rc bench_gpu_train rc=$train_rc bench_vllm rc=$vllm_rc"
[ "$eval_rc" = 0 ] && [ "$train_rc" = 0 ] && [ "$vllm_rc" = 0 ]
