"""neggrad: reinforcement learning with verifiable rewards, and what to learn from wrong answers."""

__version__ = "0.1.0"
