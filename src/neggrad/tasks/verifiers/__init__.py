"""Verifiers: exact arithmetic, ``\\boxed{}``/final-answer math equivalence, user functions, a worker pool."""
