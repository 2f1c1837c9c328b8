"""Importing this module registers neggrad's estimators and losses with verl (``neggrad.integrations.verl``).

For ``VERL_USE_EXTERNAL_MODULES=neggrad.integrations.verl_plugin``, which verl imports in every process it
starts, so the actor workers see the policy losses too.
"""

from neggrad.integrations.verl import register

REGISTERED = register()
"""The names now in verl's registries."""
