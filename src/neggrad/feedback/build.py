"""The judge named by ``feedback.judge``, built from its config section."""

from __future__ import annotations

import atexit
import logging
import os

from neggrad.config import ConfigError, FeedbackConfig
from neggrad.feedback.cache import JudgeCache
from neggrad.feedback.judge import DEFAULT_TEMPLATE, Judge

logger = logging.getLogger(__name__)

_BUILT: dict[str, Judge] = {}


def build_judge(cfg: FeedbackConfig) -> Judge:
    """A new judge for ``cfg``; ConfigError when its settings or environment cannot work.

    The http judge reads its API key from the environment variable named by ``http.api_key_env``
    here, once; a missing variable is an error naming the variable, never showing a value.
    """
    try:
        cfg.check_judge()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    template = cfg.prompt_template or DEFAULT_TEMPLATE
    if cfg.judge == "oracle":
        from neggrad.feedback.oracle import OracleJudge

        return OracleJudge(flip=cfg.noise.flip, shift=cfg.noise.shift, seed=cfg.noise.seed)
    if cfg.judge == "local":
        from neggrad.feedback.local import LocalJudge

        local = cfg.local
        return LocalJudge.from_pretrained(
            local.name_or_path,
            device=local.device,
            template=template,
            max_new_tokens=local.max_new_tokens,
            batch_size=local.batch_size,
            cache=JudgeCache(cfg.cache_dir, f"local|{local.name_or_path}|{local.max_new_tokens}"),
        )
    from neggrad.feedback.http import HTTPJudge, insecure_key_host

    http = cfg.http
    api_key = None
    if http.api_key_env:
        api_key = os.environ.get(http.api_key_env)
        if not api_key:
            raise ConfigError(
                f"feedback.http.api_key_env names {http.api_key_env}, which is not set: export it with the "
                "judge server's API key, or set feedback.http.api_key_env: null for a server without one"
            )
    if api_key and http.allow_insecure_key and insecure_key_host(http.base_url):
        logger.warning(
            "feedback.http.allow_insecure_key: the judge's API key goes over plain http:// to %s",
            insecure_key_host(http.base_url),
        )
    try:
        judge = HTTPJudge(
            base_url=http.base_url,
            model=http.model,
            api_key=api_key,
            template=template,
            temperature=http.temperature,
            max_tokens=http.max_tokens,
            timeout_s=http.timeout_s,
            max_retries=http.max_retries,
            backoff_s=http.backoff_s,
            max_backoff_s=http.max_backoff_s,
            max_concurrency=http.max_concurrency,
            breaker_failures=http.breaker_failures,
            breaker_cooldown_s=http.breaker_cooldown_s,
            cache=JudgeCache(cfg.cache_dir, f"http|{http.model}|{http.temperature}|{http.max_tokens}"),
            allow_insecure_key=http.allow_insecure_key,
        )
    except ValueError as err:  # a key that would travel in clear text: the message names the host, never the key
        raise ConfigError(str(err)) from None
    return judge


def judge_for(cfg: FeedbackConfig) -> Judge:
    """The judge of ``cfg``, built once per process and reused (a local model loads once, the breaker persists)."""
    key = cfg.model_dump_json()
    if key not in _BUILT:
        if not _BUILT:
            atexit.register(close_judges)  # e.g. the TRL integration, which has no end-of-run hook of ours
        _BUILT[key] = build_judge(cfg)
    return _BUILT[key]


def close_judges() -> None:
    """Close what the judges built by :func:`judge_for` hold open (the http judge's connections).

    The judges stay built: one used again reopens what it needs, with its circuit breaker as it was.
    """
    for judge in list(_BUILT.values()):
        close_judge(judge)


def close_judge(judge: Judge) -> None:
    """``judge.close()`` for a judge that has one (the http judge); the others hold nothing open."""
    close = getattr(judge, "close", None)
    if callable(close):
        close()
