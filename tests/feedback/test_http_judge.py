"""The http judge against a real loopback server: answers, faults, cache, breaker, and no key leaks."""

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from neggrad.config import ConfigError, build_config, dump_config
from neggrad.feedback.build import build_judge
from neggrad.feedback.cache import JudgeCache
from neggrad.feedback.http import HTTPJudge
from neggrad.feedback.judge import JudgeRequest

SECRET = "sk-test-0123456789-do-not-leak"


def _req(case: str, steps=("a = 1", "b = 2", "c = 3")) -> JudgeRequest:
    return JudgeRequest(f"case:{case} Q: 1+2+3=", "1+2=3, 3+3=6. A: 6", tuple(steps))


def _judge(url, tmp_path, **kwargs) -> HTTPJudge:
    settings = {"timeout_s": 0.5, "max_retries": 2, "backoff_s": 0.01, "max_backoff_s": 2.0, "max_concurrency": 4}
    return HTTPJudge(
        base_url=url,
        model="stub",
        api_key=SECRET,
        cache=JudgeCache(tmp_path / "cache", "http|stub"),
        **{**settings, **kwargs},
    )


def test_answers_are_parsed_and_concurrency_is_limited(stub, tmp_path):
    judge = _judge(stub.url, tmp_path, max_concurrency=2)
    verdicts = judge.judge([_req("ok1"), _req("ok2"), _req("ok3"), _req("none"), _req("ok2", steps=())])
    assert [(v.kind, v.step) for v in verdicts] == [
        ("first_wrong", 1), ("first_wrong", 2), ("first_wrong", 3), ("none_wrong", None), ("failure", None)
    ]  # fmt: skip
    assert verdicts[-1].reason == "the response has no steps"  # never sent
    assert sum(stub.calls.values()) == 4 and stub.max_in_flight <= 2
    assert set(stub.auth) == {f"Bearer {SECRET}"}
    assert all(v.latency_s > 0 and not v.cached for v in verdicts[:4])


def test_429_with_retry_after_is_honoured(stub, tmp_path):
    t0 = time.perf_counter()
    verdict = _judge(stub.url, tmp_path).judge([_req("429once")])[0]
    assert (verdict.kind, verdict.step) == ("first_wrong", 1)
    assert stub.calls["429once"] == 2
    assert time.perf_counter() - t0 >= 1.0  # Retry-After: 1, not the 0.01 s backoff


def test_500_is_retried_then_given_up(stub, tmp_path):
    judge = _judge(stub.url, tmp_path)
    once, always = judge.judge([_req("500once"), _req("500always")])
    assert (once.kind, once.step) == ("first_wrong", 2)
    assert always.failed and always.reason == "HTTP 500 after 3 attempts"
    assert stub.calls["500always"] == 3  # 1 + max_retries


def test_slow_answer_past_the_timeout(stub, tmp_path):
    verdict = _judge(stub.url, tmp_path, timeout_s=0.2, max_retries=1).judge([_req("slow")])[0]
    assert verdict.failed and verdict.reason == "timeout after 2 attempts"


def test_malformed_json_and_client_errors_are_not_retried(stub, tmp_path):
    bad, unauthorised = _judge(stub.url, tmp_path).judge([_req("badjson"), _req("401")])
    assert bad.failed and bad.reason.startswith("malformed response")
    assert unauthorised.failed and unauthorised.reason == "HTTP 401"
    assert stub.calls["badjson"] == stub.calls["401"] == 1


def test_connection_refused(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verdict = _judge(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=1).judge([_req("ok1")])[0]
    assert verdict.failed and verdict.reason == "connection error (ConnectionRefusedError) after 2 attempts"


def test_garbage_is_a_failure_but_cached_and_nothing_is_lost_from_the_cache(stub, tmp_path):
    requests = [_req("ok1"), _req("garbage"), _req("500always"), _req("ok3")]
    first = _judge(stub.url, tmp_path, max_retries=0).judge(requests)
    assert [v.kind for v in first] == ["first_wrong", "failure", "failure", "first_wrong"]
    assert "does not end with" in first[1].reason
    calls = dict(stub.calls)
    # a resumed run (new judge, same cache): answered replies cost nothing, the failed request is tried again
    again = _judge(stub.url, tmp_path, max_retries=0).judge(requests)
    assert [v.cached for v in again] == [True, True, False, True]
    assert [(v.kind, v.step) for v in again] == [(v.kind, v.step) for v in first]
    assert stub.calls["500always"] == calls["500always"] + 1
    assert all(stub.calls[c] == calls[c] for c in ("ok1", "garbage", "ok3"))


def test_circuit_breaker_opens_after_consecutive_failures(stub, tmp_path):
    judge = _judge(stub.url, tmp_path, max_retries=0, max_concurrency=1, breaker_failures=2, breaker_cooldown_s=0.3)
    verdicts = judge.judge([_req("500always"), _req("500always"), _req("ok1")])
    assert verdicts[2].failed and "circuit breaker open" in verdicts[2].reason
    assert stub.calls["ok1"] == 0  # the open breaker never touched the server
    time.sleep(0.35)
    assert judge.judge([_req("ok1")])[0].step == 1  # after the cooldown requests go through again
    assert judge._consecutive_failures == 0


def test_api_key_never_leaks(stub, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NEGGRAD_TEST_JUDGE_KEY", SECRET)
    cfg = build_config(
        {},
        [
            "feedback.enabled=true",
            "feedback.judge=http",
            f"feedback.http.base_url={stub.url}",
            "feedback.http.model=stub",
            "feedback.http.api_key_env=NEGGRAD_TEST_JUDGE_KEY",
            "feedback.http.timeout_s=0.2",
            "feedback.http.max_retries=0",
            "feedback.http.breaker_failures=2",
            f"feedback.cache_dir={tmp_path / 'cache'}",
        ],
    )
    judge = build_judge(cfg.feedback)
    with caplog.at_level(logging.DEBUG):
        verdicts = judge.judge([_req(c) for c in ("ok1", "garbage", "401", "500always", "slow", "badjson", "ok2")])
    assert set(stub.auth) == {f"Bearer {SECRET}"}  # the key is used ...
    seen = [caplog.text, repr(judge), dump_config(cfg), *(str(v) for v in verdicts)]
    seen += [p.read_text() for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert not any(SECRET in text for text in seen)  # ... and shown nowhere
    assert "circuit breaker" in caplog.text


def test_a_missing_key_variable_is_a_config_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv("NEGGRAD_TEST_JUDGE_KEY", raising=False)
    cfg = build_config(
        {}, ["feedback.judge=http", "feedback.http.model=m", "feedback.http.api_key_env=NEGGRAD_TEST_JUDGE_KEY"]
    )
    with pytest.raises(ConfigError, match="NEGGRAD_TEST_JUDGE_KEY, which is not set"):
        build_judge(cfg.feedback)
    cfg = build_config({}, ["feedback.judge=http", "feedback.http.model=m", "feedback.http.api_key_env=null"])
    assert build_judge(cfg.feedback)._api_key is None  # a server without authentication


class _Recorder(BaseHTTPRequestHandler):
    """Answers every request with a judge verdict and records what it received (method, path, headers)."""

    def _any(self):
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        payload = json.dumps({"choices": [{"message": {"content": "FIRST_WRONG_STEP: 1"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _any  # noqa: N815 (http.server's names)

    def log_message(self, *args):
        pass


class _Redirector(BaseHTTPRequestHandler):
    """Sends every request elsewhere with the status and Location the server was given."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(self.server.status)
        self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    started = []

    def start(handler, **attrs):
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        for key, value in attrs.items():
            setattr(server, key, value)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_the_key_goes_nowhere_else(servers, tmp_path, caplog, status):
    recorder, elsewhere = servers(_Recorder, seen=[])
    target = f"{elsewhere}/v1/chat/completions"
    _, url = servers(_Redirector, status=status, location=target)
    with caplog.at_level(logging.DEBUG):
        verdict = _judge(f"{url}/v1", tmp_path).judge([_req("ok1")])[0]
    assert recorder.seen == []  # neither the request nor the key reached the redirect's target
    assert verdict.failed and f"HTTP {status}" in verdict.reason and target in verdict.reason
    assert SECRET not in verdict.reason and SECRET not in caplog.text
    assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached from a redirect


def _http_config(tmp_path, base_url, *more):
    return build_config(
        {},
        [
            "feedback.judge=http",
            f"feedback.http.base_url={base_url}",
            "feedback.http.model=m",
            "feedback.http.api_key_env=NEGGRAD_TEST_JUDGE_KEY",
            f"feedback.cache_dir={tmp_path}",
            *more,
        ],
    )


def test_a_key_goes_over_plain_http_only_to_loopback_or_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("NEGGRAD_TEST_JUDGE_KEY", SECRET)
    for local in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1"):
        assert build_judge(_http_config(tmp_path, local).feedback)._api_key == SECRET
    assert build_judge(_http_config(tmp_path, "https://judge.example.com/v1").feedback)._api_key == SECRET
    with pytest.raises(ConfigError, match=r"plain http:// to judge.example.com,.*allow_insecure_key") as err:
        build_judge(_http_config(tmp_path, "http://judge.example.com/v1").feedback)
    assert SECRET not in str(err.value)
    allowed = _http_config(tmp_path, "http://judge.example.com/v1", "feedback.http.allow_insecure_key=true")
    assert build_judge(allowed.feedback)._api_key == SECRET
    # without a key there is nothing to protect
    keyless = _http_config(tmp_path, "http://judge.example.com/v1", "feedback.http.api_key_env=null")
    assert build_judge(keyless.feedback)._api_key is None
    with pytest.raises(ValueError, match="plain http://"):  # the class itself refuses too
        HTTPJudge(base_url="http://10.0.0.5/v1", model="m", api_key=SECRET)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("file:///etc/v1", "must start with http:// or https://"),
        ("https://user:sk-123@judge.example.com/v1", "no user name or password"),
    ],
)
def test_base_urls_that_are_not_http_or_hold_credentials_are_refused(base_url, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_config({}, ["feedback.judge=http", "feedback.http.model=m", f"feedback.http.base_url={base_url}"])
    assert "sk-123" not in str(err.value)


class _KeepAlive(BaseHTTPRequestHandler):
    """An HTTP/1.1 judge server that keeps connections open and counts them (opened, still open)."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.opened += 1
            self.server.open += 1

    def finish(self):
        with self.server.lock:
            self.server.open -= 1
        super().finish()

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests += 1
        time.sleep(0.02)  # long enough for the pool's threads to overlap
        payload = json.dumps({"choices": [{"message": {"content": "FIRST_WRONG_STEP: 2"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _wait_for(condition, seconds=5.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)
    return condition()


def test_connections_are_kept_alive_and_reused_across_threads_and_calls(servers, tmp_path):
    server, url = servers(_KeepAlive, lock=threading.Lock(), opened=0, open=0, requests=0)
    # a generous timeout: a retry after a timeout (a loaded machine) would open a new connection and void the count
    judge = _judge(f"{url}/v1", tmp_path, max_concurrency=2, timeout_s=30.0)
    first = judge.judge([_req(f"a{i}") for i in range(6)])
    second = judge.judge([_req(f"b{i}") for i in range(6)])  # a later call: the same client, the same connections
    assert all((v.kind, v.step) == ("first_wrong", 2) for v in first + second)
    assert server.requests == 12
    assert 1 <= server.opened <= 2  # at most max_concurrency connections for 12 requests (urllib opened 12)
    assert server.open == server.opened  # still open between calls, ready for the next request
    judge.close()
    assert _wait_for(lambda: server.open == 0)  # close() ends the kept-alive connections
    judge.close()  # idempotent
    assert judge.judge([_req("c0")])[0].step == 2  # a closed judge opens a new client when used again
    assert server.opened <= 3 and server.requests == 13
    judge.close()


class _Trickler(BaseHTTPRequestHandler):
    """Sends the headers after ``head_delay`` s, then the body's bytes ``chunk`` at a time, ``gap`` s apart,
    and after ``stall_after`` bytes (if set) nothing more for 30 s."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        payload = json.dumps({"choices": [{"message": {"content": "x" * srv.padding + "\nFIRST_WRONG_STEP: 1"}}]})
        payload = payload.encode()
        try:
            time.sleep(srv.head_delay)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.flush()
            for start in range(0, len(payload), srv.chunk):
                if srv.stall_after is not None and start >= srv.stall_after:
                    time.sleep(30)
                self.wfile.write(payload[start : start + srv.chunk])
                self.wfile.flush()
                time.sleep(srv.gap)
        except OSError:  # the client gave up
            pass

    def log_message(self, *args):
        pass


def _trickle(servers, tmp_path, timeout_s, **server):
    settings = {"head_delay": 0.0, "chunk": 1, "gap": 0.05, "stall_after": None, "padding": 0, **server}
    _, url = servers(_Trickler, **settings)
    judge = _judge(f"{url}/v1", tmp_path, timeout_s=timeout_s, max_retries=0)
    t0 = time.monotonic()
    verdict = judge.judge([_req("slowbody")])[0]
    elapsed = time.monotonic() - t0
    judge.close()
    return verdict, elapsed


def test_a_body_trickled_past_the_deadline_fails_at_the_deadline(servers, tmp_path):
    # every byte comes well within a socket read timeout, the whole body would take ~5 s: the total deadline cuts it
    verdict, elapsed = _trickle(servers, tmp_path, timeout_s=1.0, gap=0.05, padding=40)
    assert verdict.failed and verdict.reason == "timeout after 1 attempts"
    assert 1.0 <= elapsed < 1.6


def test_a_body_that_stalls_fails_at_the_deadline_not_a_read_timeout_later(servers, tmp_path):
    # the headers come at 0.7 s, then part of the body and silence: a per-read timeout alone would end at ~1.7 s
    verdict, elapsed = _trickle(servers, tmp_path, timeout_s=1.0, head_delay=0.7, chunk=8, gap=0.0, stall_after=16)
    assert verdict.failed and verdict.reason == "timeout after 1 attempts"
    assert 1.0 <= elapsed < 1.5


def test_a_body_read_in_pieces_within_the_deadline_is_an_answer(servers, tmp_path):
    verdict, _ = _trickle(servers, tmp_path, timeout_s=5.0, chunk=16, gap=0.01)
    assert (verdict.kind, verdict.step) == ("first_wrong", 1) and not verdict.cached


def test_close_judges_closes_the_built_http_judge_which_stays_usable(stub, tmp_path, monkeypatch):
    from neggrad.feedback import build

    monkeypatch.setattr(build, "_BUILT", {})
    cfg = _http_config(tmp_path, stub.url, "feedback.http.api_key_env=null", "feedback.http.model=stub")
    judge = build.judge_for(cfg.feedback)
    assert judge.judge([_req("ok1")])[0].step == 1 and judge._client is not None
    build.close_judges()
    assert judge._client is None  # its connections are closed ...
    assert build.judge_for(cfg.feedback) is judge  # ... and it is still the process's judge, and works
    assert judge.judge([_req("ok2")])[0].step == 2
    build.close_judges()
