"""The ``http`` judge: any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API).

Stdlib only (``urllib``), with up to ``max_concurrency`` requests in flight. What each fault ends as:

- timeout, connection error, HTTP 429 or 5xx: retried up to ``max_retries`` times, waiting
  ``backoff_s * 2**attempt`` (at most ``max_backoff_s``), or the server's ``Retry-After`` when it
  sends one (also capped); then a failure.
- any other HTTP error (401 bad key, 404 unknown model) or a body that is not a chat completion:
  a failure at once, no retry.
- a reply whose text does not end with a verdict line: a failure by ``parse_verdict``; the reply is
  cached like any answer the server gave, so it is not bought twice.
- ``breaker_failures`` failed requests in a row open the circuit breaker: for ``breaker_cooldown_s``
  every request fails at once without touching the server; then requests are tried again.

- a redirect (HTTP 3xx): a failure at once naming the status and the target; it is never followed,
  so neither the request nor the key reaches another host.

Every failure is one response with reward 0; none raises. Replies are cached on disk by (judge,
prompt) before they are parsed. The API key is read from the environment variable named by
``feedback.http.api_key_env``, sent only in the Authorization header to ``base_url``, and never logged,
cached, put in a URL or in an error message. It goes over plain ``http://`` only to a loopback host
(127.0.0.0/8, ::1, localhost) unless ``allow_insecure_key`` (``feedback.http.allow_insecure_key``) is set.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from neggrad.feedback.cache import JudgeCache
from neggrad.feedback.judge import DEFAULT_TEMPLATE, JudgeRequest, Verdict, failure, parse_verdict, render_prompt

logger = logging.getLogger(__name__)

_RETRIED_STATUS = (429, 500, 502, 503, 504)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend the Authorization header to whatever host it names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirect)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a URL's host name) is this machine: localhost, 127.0.0.0/8 or ::1."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_key_host(base_url: str) -> str | None:
    """The host an API key would travel to in clear text (plain http:// to a non-loopback host), else None."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
        return parts.hostname or base_url
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HTTPJudge:
    """Chat-completions judge with retries, backoff, a circuit breaker and a reply cache."""

    name = "http"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 8,
        breaker_failures: int = 20,
        breaker_cooldown_s: float = 60.0,
        cache: JudgeCache | None = None,
        allow_insecure_key: bool = False,
    ):
        host = insecure_key_host(base_url)
        if api_key and host and not allow_insecure_key:
            raise ValueError(
                f"the judge's API key would travel over plain http:// to {host}, readable on the way: use https://, "
                "or set feedback.http.allow_insecure_key: true if that network is yours"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.template = model, template
        self.temperature, self.max_tokens = temperature, max_tokens
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_concurrency = max_concurrency
        self.breaker_failures, self.breaker_cooldown_s = breaker_failures, breaker_cooldown_s
        self.cache = cache
        self._api_key = api_key
        self._lock = threading.Lock()
        self._consecutive_failures = 0
        self._open_until = 0.0

    def __repr__(self) -> str:  # never the key
        return f"HTTPJudge(model={self.model!r}, max_concurrency={self.max_concurrency})"

    # ------------------------------------------------------------------ circuit breaker
    def _breaker_open(self) -> bool:
        with self._lock:
            return time.monotonic() < self._open_until

    def _record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self._consecutive_failures, self._open_until = 0, 0.0
                return
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.breaker_failures and time.monotonic() >= self._open_until:
                self._open_until = time.monotonic() + self.breaker_cooldown_s
                logger.warning(
                    "http judge: %d failed requests in a row, pausing requests for %.0f s (circuit breaker)",
                    self._consecutive_failures,
                    self.breaker_cooldown_s,
                )

    # ------------------------------------------------------------------ one request
    def _post(self, prompt: str) -> bytes:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with _OPENER.open(request, timeout=self.timeout_s) as response:
            return response.read()

    def _ask(self, prompt: str) -> tuple[str | None, str | None]:
        """(reply, None) or (None, reason); retries as the module docstring says."""
        reason = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self._breaker_open():
                return None, "circuit breaker open (too many failed requests in a row)"
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            try:
                raw = self._post(prompt)
            except urllib.error.HTTPError as err:
                status, retry_after = err.code, _retry_after(err.headers.get("Retry-After") if err.headers else None)
                location = err.headers.get("Location") if err.headers else None
                err.close()
                reason = f"HTTP {status}"
                if 300 <= status < 400:
                    target = f" to {location[:200]}" if location else ""
                    return None, f"HTTP {status} redirect{target}, not followed (the judge is asked at base_url only)"
                if status not in _RETRIED_STATUS:
                    return None, reason
                if retry_after is not None:
                    wait = min(self.max_backoff_s, retry_after)
            except OSError as err:  # URLError, refused or reset connections, socket timeouts
                cause = getattr(err, "reason", err)
                timed_out = isinstance(cause, TimeoutError) or "timed out" in str(cause)
                reason = "timeout" if timed_out else f"connection error ({type(cause).__name__})"
            except Exception as err:  # http.client.HTTPException (a garbled status line) or anything else: retried
                reason = f"request error ({type(err).__name__})"
            else:
                try:
                    content = json.loads(raw)["choices"][0]["message"]["content"]
                except (ValueError, KeyError, IndexError, TypeError):
                    return None, "malformed response (not a chat completion)"
                if not isinstance(content, str):
                    return None, "malformed response (no message text)"
                return content, None
            if attempt < self.max_retries:
                time.sleep(wait)
        return None, f"{reason} after {self.max_retries + 1} attempts"

    def _judge_one(self, request: JudgeRequest) -> Verdict:
        n = len(request.steps)
        if n == 0:
            return failure("the response has no steps")
        prompt = render_prompt(request, self.template)
        reply = self.cache.get(prompt) if self.cache else None
        if reply is not None:
            return parse_verdict(reply, n).with_timing(cached=True, latency_s=0.0)
        t0 = time.perf_counter()
        reply, reason = self._ask(prompt)
        latency = time.perf_counter() - t0
        self._record(reply is not None)
        if reply is None:
            return failure(reason, n).with_timing(cached=False, latency_s=latency)
        if self.cache:
            self.cache.put(prompt, reply)
        return parse_verdict(reply, n).with_timing(cached=False, latency_s=latency)

    def judge(self, requests: list[JudgeRequest]) -> list[Verdict]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._judge_one, requests))
