"""Tasks: prompts with a gold answer and the verifier that scores completions.

``build.build_task`` returns the task a config names: the testbed's arithmetic (``testbed``), word problems for
pretrained chat models (``word_problems``) or math data sets (``data``), each scored by a verifier (``verifiers``).
"""
