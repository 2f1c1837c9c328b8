"""Turning a problem into the model's input: a plain template (base models) or the tokenizer's chat template."""

from __future__ import annotations


def format_prompt(
    problem: str,
    *,
    template: str = "{problem}",
    tokenizer=None,
    chat_template: bool = False,
    system_prompt: str | None = None,
) -> str:
    """The model input for ``problem``.

    ``template`` has ``{problem}`` replaced by the problem (plain replacement, not ``str.format``, so LaTeX braces
    such as ``\\boxed{}`` need no escaping). With ``chat_template`` the result is the user turn, after an optional
    system turn, rendered by ``tokenizer.apply_chat_template`` with the generation prompt (the assistant header)
    appended; the rollout then tokenizes it without adding special tokens, so the template's own BOS is kept once.

    >>> format_prompt("1+1?", template="Q: {problem}\\nA:")
    'Q: 1+1?\\nA:'
    """
    text = template.replace("{problem}", problem)
    if not chat_template:
        if system_prompt is not None:
            raise ValueError("a system prompt needs the chat template (plain prompts have no system turn)")
        return text
    if tokenizer is None:
        raise ValueError("data.chat_template is on but no tokenizer was given to format the prompts")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '?')}) has no chat "
            "template: set data.chat_template: false for plain prompts (base models)"
        )
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": text})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
