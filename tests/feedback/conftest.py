"""A loopback OpenAI-compatible chat-completions server with scripted answers and injected faults.

The judge prompt's problem text picks the behaviour (``case:<name>``, see ``_reply``); the server counts
requests per case, records Authorization headers and the most requests it had in flight at once.
"""

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class StubState:
    def __init__(self):
        self.calls = Counter()
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()


def _completion(text: str) -> bytes:
    return json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}).encode()


def _reply(case: str, attempt: int) -> tuple[int, dict, bytes, float]:
    """(status, headers, body, delay) for the ``attempt``-th request (1-based) of ``case``."""
    if case.startswith("ok"):  # ok2: the answer's first wrong step is 2
        return 200, {}, _completion(f"Checked.\nFIRST_WRONG_STEP: {case[2:]}"), 0.05
    if case == "none":
        return 200, {}, _completion("All steps hold.\nFIRST_WRONG_STEP: NONE"), 0.0
    if case == "429once":
        if attempt == 1:
            return 429, {"Retry-After": "1"}, b'{"error": "rate limited"}', 0.0
        return 200, {}, _completion("FIRST_WRONG_STEP: 1"), 0.0
    if case == "500once":
        if attempt == 1:
            return 500, {}, b"internal error", 0.0
        return 200, {}, _completion("FIRST_WRONG_STEP: 2"), 0.0
    if case == "500always":
        return 500, {}, b"internal error", 0.0
    if case == "401":
        return 401, {}, b'{"error": "bad key"}', 0.0
    if case == "slow":
        return 200, {}, _completion("FIRST_WRONG_STEP: 1"), 1.0
    if case == "badjson":
        return 200, {}, b'{"choices": [{"message": ', 0.0
    if case == "garbage":
        return 200, {}, _completion("Looks fine to me, good job!"), 0.0
    return 404, {}, b"unknown case", 0.0


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        state: StubState = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        case = re.search(r"case:(\w+)", prompt).group(1)
        with state.lock:
            state.calls[case] += 1
            attempt = state.calls[case]
            state.auth.append(self.headers.get("Authorization", ""))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        status, headers, payload, delay = _reply(case, attempt)
        try:
            time.sleep(delay)
        finally:  # in flight: read and not yet answered (once answered, the client may send its next request
            with state.lock:  # before this thread runs again, which is not a request beyond the client's limit)
                state.in_flight -= 1
        try:
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def stub():
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = StubState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    server.state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield server.state
    server.shutdown()
    server.server_close()
