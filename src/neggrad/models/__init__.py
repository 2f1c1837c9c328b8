"""The policy: ``load`` (testbed or Hugging Face model, LoRA, the KL reference), ``policy`` (the training-side
forward pass: completion logits, log-probabilities and hidden states), ``testbed`` (the built-in model, its
character tokenizer and its cached SFT warm start)."""
