"""Character-level tokenizer of the testbed: one token per character of the arithmetic alphabet.

Built in code (no download, no training): a ``tokenizers`` WordLevel model over single characters,
a pre-tokenizer that isolates every character, and a ``Fuse`` decoder so decoding concatenates the
tokens back into the exact text (no spaces inserted). Padding is on the left, as batched generation
needs, and it is passed to the constructor because a ``padding_side`` set afterwards is not saved
(ENVIRONMENT.md).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

ALPHABET = "0123456789+-*=,.:AQ "
"""Every character the task writes; each is one token."""
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)
"""Ids 0, 1, 2; the characters of ALPHABET follow in order."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The testbed tokenizer: ids 0-2 are ``<pad>``, ``<eos>``, ``<unk>``, then one id per ALPHABET character."""
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *ALPHABET))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Reload a saved testbed tokenizer (not through AutoTokenizer, which swaps in Qwen2's pre-tokenizer)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    if tokenizer.padding_side != "left":
        raise ValueError(
            f"tokenizer at {path} pads on the {tokenizer.padding_side}, but generation needs left padding: "
            "rebuild it with build_tokenizer() and save it again"
        )
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(f"tokenizer at {path} needs a pad token distinct from eos; rebuild it with build_tokenizer()")
    return tokenizer
