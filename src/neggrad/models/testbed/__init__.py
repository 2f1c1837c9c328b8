"""The built-in CPU testbed's model side: a tiny Llama (``model``), a character tokenizer (``tokenizer``) and the
supervised warm start on the arithmetic task, cached by its settings (``sft``)."""
