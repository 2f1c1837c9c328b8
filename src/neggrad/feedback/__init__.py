"""Step-wise judge feedback for all-wrong groups (SGPO, Chen et al. 2025, arXiv:2505.11595; docs/algorithms.md §10).

- ``steps``: how a response is cut into steps (``feedback.step_split``).
- ``judge``: the contract (``JudgeRequest`` -> ``Verdict``), the prompt template and the strict parser.
- ``oracle``, ``local``, ``http``: the three judges; ``build``: the one named by the config.
- ``cache``: judge replies on disk, keyed by (judge, prompt).
- ``repair``: the group policy (all-wrong groups -> partial rewards) and its metrics.
- ``offline``: ``neggrad judge``, partial rewards for a saved rollout file.

The partial-reward formula itself is ``neggrad.core.partial_reward``.
"""
