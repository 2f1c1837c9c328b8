"""neggrad's algorithms inside other trainers, for users who keep their stack.

- ``trl``: ``NeggradGRPOTrainer``, a ``trl.GRPOTrainer`` whose advantages, NTHR token weights, judge
  feedback and loss are neggrad's core functions, configured by ``NeggradConfig`` next to ``GRPOConfig``.
- ``verl``: neggrad's advantage estimators and policy losses as functions with verl's registry signatures,
  and ``register()`` to put them into ``verl.trainer.ppo.core_algos``'s registries.

Neither module imports its trainer at ``import neggrad``; each needs its own extra.
"""
