"""Diagnostics that watch what an update does: Lazy Likelihood Displacement (lld.py), token inspection."""
