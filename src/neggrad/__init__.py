"""neggrad: reinforcement learning with verifiable rewards, and what to learn from wrong answers.

Packages, lowest layer first (a package imports only from the layers before it; tests/test_layout.py checks it):

- ``core``: pure functions over tensors, one module per paper's equation (advantages, losses, NTHR scores, ...).
  Imports nothing of neggrad.
- ``config``: the run's schema (pydantic sections), cross-key rules, method presets, loading and overrides.
- ``tasks``: prompt sources and their verifiers (the testbed's arithmetic, word problems, math data sets).
- ``models``: loading the policy (testbed or Hugging Face), its training-side forward pass, the testbed model.
- ``rollout``: the ``Rollout`` batch type and the generation engines (HF ``generate``, the lean loop, vLLM).
- ``feedback``: step-wise judges that turn all-wrong groups into partial rewards.
- ``strategies``: what to do with wrong answers, as plug-ins the trainer calls at fixed hooks.
- ``trainer``: the GRPO loop (batch, update, evaluate, checkpoint, distributed, metrics, trackers).
- ``analysis``: compare, report, plan, the LLD probe study, run inspection; these drive the trainer.
- ``integrations``: neggrad's estimators and losses inside TRL and verl.
- ``cli``: the ``neggrad`` command.
"""

__version__ = "0.1.0"
