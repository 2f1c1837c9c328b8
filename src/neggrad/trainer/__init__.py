"""The training loop and what it needs around it.

``loop.train`` reads top to bottom, one call per stage of a GRPO step: ``batch.collect_batch`` (generate, score,
strategies' group hooks, advantages), ``update.policy_update`` (old-policy pass, surrogate loss, optimizer),
``evaluate.evaluate`` (held-out accuracy), ``checkpoint.save_checkpoint`` (atomic, exact resume). ``distributed``
holds data parallelism, ``metrics``/``trackers`` the logs, ``lld``/``probe`` the displacement diagnostics.
"""
