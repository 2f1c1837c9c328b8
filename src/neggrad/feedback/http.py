"""The ``http`` judge: any OpenAI-compatible chat-completions server (vLLM, SGLang, a hosted API).

Requests go through one ``httpx.Client`` per judge, shared by up to ``max_concurrency`` threads: its
connections are kept alive and reused (at most ``max_concurrency`` open to the server), so a judged group
costs no new TCP or TLS handshakes. ``close()`` ends them; a closed judge opens a new client when next used.

Each attempt has a total deadline of ``timeout_s`` seconds from its start: connecting, sending and waiting
for the reply's headers are each bounded by it, and once the headers are in, the body must be read whole by
the deadline (a server that trickles its reply is cut off there, whatever the pace of its bytes). What each
fault ends as:

- timeout (the deadline), connection error, HTTP 429 or 5xx: retried up to ``max_retries`` times, waiting
  ``backoff_s * 2**attempt`` (at most ``max_backoff_s``), or the server's ``Retry-After`` when it
  sends one (also capped); then a failure.
- any other HTTP error (401 bad key, 404 unknown model) or a body that is not a chat completion:
  a failure at once, no retry.
- a reply whose text does not end with a verdict line: a failure by ``parse_verdict``; the reply is
  cached like any answer the server gave, so it is not bought twice.
- ``breaker_failures`` failed requests in a row open the circuit breaker: for ``breaker_cooldown_s``
  every request fails at once without touching the server; then requests are tried again.
- a redirect (HTTP 3xx): a failure at once naming the status and the target; it is never followed
  (``follow_redirects=False``), so neither the request nor the key reaches another host.

Every failure is one response with reward 0; none raises. Replies are cached on disk by (judge,
prompt) before they are parsed. The API key is read from the environment variable named by
``feedback.http.api_key_env``, sent only in the Authorization header of requests to ``base_url`` (never
set on the client, so nothing else the client might send carries it), and never logged, cached, put in a
URL or in an error message. It goes over plain ``http://`` only to a loopback host (127.0.0.0/8, ::1,
localhost) unless ``allow_insecure_key`` (``feedback.http.allow_insecure_key``) is set.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import httpx

from neggrad.feedback.cache import JudgeCache
from neggrad.feedback.judge import DEFAULT_TEMPLATE, JudgeRequest, Verdict, failure, parse_verdict, render_prompt

logger = logging.getLogger(__name__)

_RETRIED_STATUS = (429, 500, 502, 503, 504)


class _DeadlinePassed(Exception):
    """An attempt ran past its total deadline (reported as a timeout)."""


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


def _os_cause(err: BaseException) -> BaseException:
    """The operating-system error under an httpx error (ConnectionRefusedError, ...), else ``err`` itself."""
    seen = err
    while seen is not None:
        if type(seen).__module__ == "builtins" and isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err


class _Watchdog:
    """Shuts a response's socket down at the deadline, so a read blocked on a slow body wakes then."""

    def __init__(self, response: httpx.Response, seconds: float):
        stream = response.extensions.get("network_stream")
        self._sock = stream.get_extra_info("socket") if stream is not None else None
        self._lock = threading.Lock()
        self._armed = True
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        if self._sock is not None:
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()


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
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:  # never the key
        return f"HTTPJudge(model={self.model!r}, max_concurrency={self.max_concurrency})"

    # ------------------------------------------------------------------ the shared client
    def _http(self) -> httpx.Client:
        """The judge's one client (opened on first use): thread-safe, its connections kept alive and reused."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    follow_redirects=False,
                    limits=httpx.Limits(
                        max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                    ),
                )
            return self._client

    def close(self) -> None:
        """Close the client and its kept-alive connections (idempotent; a later request opens a new client)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> HTTPJudge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
    def _post(self, prompt: str) -> tuple[int, httpx.Headers, bytes]:
        """One attempt within its total deadline: (status, headers, body), or _DeadlinePassed or an httpx error."""
        deadline = time.monotonic() + self.timeout_s
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        auth = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None
        # each phase (pool, connect, send, wait for headers) is bounded by the whole budget ...
        client = self._http()
        with client.stream("POST", self.url, json=body, headers=auth, timeout=self.timeout_s) as response:
            # ... and once the headers are in, the rest must arrive by the deadline: the watchdog wakes a read
            # that would block past it, the check after each chunk stops a server trickling bytes in time
            watchdog = _Watchdog(response, deadline - time.monotonic())
            try:
                chunks = []
                for chunk in response.iter_bytes():
                    if time.monotonic() >= deadline:
                        raise _DeadlinePassed
                    chunks.append(chunk)
            except httpx.TransportError:
                if time.monotonic() >= deadline:  # the watchdog cut the connection
                    raise _DeadlinePassed from None
                raise
            finally:
                watchdog.disarm()
            if time.monotonic() >= deadline:
                raise _DeadlinePassed
            return response.status_code, response.headers, b"".join(chunks)

    def _ask(self, prompt: str) -> tuple[str | None, str | None]:
        """(reply, None) or (None, reason); retries as the module docstring says."""
        reason = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self._breaker_open():
                return None, "circuit breaker open (too many failed requests in a row)"
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            try:
                status, headers, raw = self._post(prompt)
            except (_DeadlinePassed, httpx.TimeoutException):
                reason = "timeout"
            except httpx.TransportError as err:  # refused or reset connections, a garbled reply
                reason = f"connection error ({type(_os_cause(err)).__name__})"
            except Exception as err:  # anything else: retried
                reason = f"request error ({type(err).__name__})"
            else:
                if 300 <= status < 400:
                    location = headers.get("Location")
                    target = f" to {location[:200]}" if location else ""
                    return None, f"HTTP {status} redirect{target}, not followed (the judge is asked at base_url only)"
                if status >= 400:
                    reason = f"HTTP {status}"
                    if status not in _RETRIED_STATUS:
                        return None, reason
                    retry_after = _retry_after(headers.get("Retry-After"))
                    if retry_after is not None:
                        wait = min(self.max_backoff_s, retry_after)
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
