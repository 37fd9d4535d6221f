"""The server against hostile clients: fuzzed bodies, clients that go away, untrusted model folders."""

import asyncio
import functools
import json
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import subprocess_env, wait_until
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rewardlab.cli import main
from rewardlab.config import ModelSettings
from rewardlab.errors import ScoringError
from rewardlab.inference.scorer import RewardModel
from rewardlab.inference.server import create_app
from rewardlab.models.loading import load_backbone
from rewardlab.models.saved import save_reward_model


@pytest.fixture(scope="module")
def reward_model(tiny):
    b = tiny["tiny-llama"]
    return RewardModel.of(b.model, b.tokenizer, b.encoder, {"reward_mean": 0.01, "reward_std": 0.02}, max_length=64)


@pytest.fixture(scope="module")
def client(reward_model):
    with TestClient(create_app(reward_model, max_items=16, max_body_bytes=64 * 1024)) as client:
        yield client


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | json_values,
     "content": st.text() | json_values},
    optional={"name": json_values}), max_size=3)
texts = st.text(max_size=40) | messages | json_values
well_typed = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                              "content": st.text(max_size=30)}), max_size=3) | st.text(max_size=40)
well_formed = st.integers(1, 5).flatmap(lambda n: st.fixed_dictionaries(
    {"prompts": st.lists(well_typed, min_size=n, max_size=n),
     "responses": st.lists(well_typed, min_size=n, max_size=n)},
    optional={"normalize": st.booleans() | st.none()}))
score_bodies = well_formed | st.fixed_dictionaries({}, optional={
    "prompts": st.lists(texts, max_size=5) | json_values,
    "responses": st.lists(texts, max_size=5) | json_values,
    "normalize": json_values,
    "query": json_values,
}) | json_values
reward_bodies = st.fixed_dictionaries({}, optional={"query": st.lists(st.text(max_size=40) | json_values, max_size=5)
                                                    | json_values, "prompts": json_values}) | json_values


def post_json(client, route: str, body):
    """``body`` as JSON, with NaN and Infinity written as Python's json module writes them (not JSON, but sent)."""
    return client.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})


def assert_answered(response, items: int | None = None) -> None:
    """A 200 with one finite reward per item, or a 4xx whose body says what is wrong; never a 5xx."""
    assert response.status_code == 200 or 400 <= response.status_code < 500, (response.status_code, response.text)
    event(f"status {response.status_code}")
    body = response.json()
    if response.status_code == 200:
        assert len(body["rewards"]) == items and all(isinstance(r, float) for r in body["rewards"])
    else:
        assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=score_bodies)
def test_fuzzed_score_bodies_get_a_reward_or_a_4xx(client, body):
    response = post_json(client, "/score", body)
    items = len(body["prompts"]) if response.status_code == 200 else None
    assert_answered(response, items)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=reward_bodies)
def test_fuzzed_get_reward_bodies_get_a_reward_or_a_4xx(client, body):
    response = post_json(client, "/get_reward", body)
    assert_answered(response, len(body["query"]) if response.status_code == 200 else None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       route=st.sampled_from(["/score", "/get_reward"]),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
def test_fuzzed_raw_bytes_and_content_types_get_a_4xx(client, raw, route, content_type):
    response = client.post(route, content=raw, headers={"Content-Type": content_type} if content_type else {})
    assert_answered(response, 0)  # random bytes never make a body with items, so only a 4xx passes
    assert response.status_code != 200


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]), route=st.sampled_from(["/score", "/get_reward"]),
       body=json_values)
def test_other_methods_on_post_routes_are_405(client, method, route, body):
    response = client.request(method, route, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code == 405 and response.json()["detail"] == "Method Not Allowed"


@pytest.mark.parametrize("body", [
    {"prompts": ["a" * 5_000_000], "responses": [1]},
    {"query": [None, "b" * 5_000_000]},
    {"prompts": ["a"], "responses": ["b"], "normalize": "y" * 5_000_000},
    {"prompts": [[{"role": "user", "content": "c" * 5_000_000, "n": [[[[1e308]]]]}]], "responses": [[]]},
])
def test_5_mb_strings_in_wrong_places_are_422_and_the_server_goes_on(reward_model, body):
    with TestClient(create_app(reward_model)) as client:
        response = client.post("/get_reward" if "query" in body else "/score", json=body)
        assert response.status_code == 422, response.text[:300]
        assert len(response.text) < 2000  # the message does not echo the 5 MB back
        assert client.post("/get_reward", json={"query": ["fine"]}).status_code == 200


def test_the_server_is_healthy_after_the_fuzzing(client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/score", json={"prompts": ["a"], "responses": ["b"]}).status_code == 200


def test_a_client_that_goes_away_leaves_its_items_uncomputed(reward_model, monkeypatch):
    """A holds the model (its pass waits for ``release``); B queues 5 items, then disconnects; C comes after B. B gets
    499 (read by nobody), its items never reach the model, and C is served right after A."""
    app, forward = create_app(reward_model), reward_model.forward
    busy, release, passes = threading.Event(), threading.Event(), []

    def held(sequences):
        passes.append(len(sequences))
        busy.set()
        release.wait(10)
        return forward(sequences)

    monkeypatch.setattr(reward_model, "forward", held)

    async def clients():
        queued, gone, sent = asyncio.Event(), asyncio.Event(), []
        body = json.dumps({"prompts": ["b"] * 5, "responses": ["x"] * 5}).encode()
        messages = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive():
            message = next(messages, None)
            if message is None:  # the body is read: the server now waits for the answer or for the client to go
                queued.set()
                await gone.wait()
                return {"type": "http.disconnect"}
            return message

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/score", "raw_path": b"/score", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"host", b"rewardlab")],
                 "client": ("127.0.0.1", 1), "server": ("rewardlab", 80)}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rewardlab") as http:
            a = asyncio.create_task(http.post("/score", json={"prompts": ["a"], "responses": ["x"]}))
            await asyncio.wait_for(asyncio.to_thread(busy.wait), 10)
            b = asyncio.create_task(app(scope, receive, send))
            await asyncio.wait_for(queued.wait(), 10)  # B's items are queued and it waits for its answer
            gone.set()
            await asyncio.wait_for(b, 10)  # B's handler ends: it does not wait for the model
            release.set()
            c = await http.post("/score", json={"prompts": ["c"], "responses": ["x"]})
            return await a, sent, c

    try:
        a, sent, c = asyncio.run(clients())
    finally:
        release.set()
    assert a.status_code == c.status_code == 200
    assert sent[0]["status"] == 499
    assert passes == [1, 1]  # A's pass and C's; none for B's 5 items


class ServerLog:
    """Reads a server's merged stdout and stderr in a thread; ``listening`` is set once uvicorn has logged the
    address it listens on (``port``), or once the output ends (the server has exited)."""

    def __init__(self, server: subprocess.Popen):
        self.lines, self.port, self.listening = [], None, threading.Event()
        self.thread = threading.Thread(target=self._read, args=(server.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found[1])
                self.listening.set()
        self.listening.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)


ESTABLISHED = "01"  # the state column of /proc/net/tcp


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """(bytes sent but not acknowledged, bytes received but not yet read by the process) of the established IPv4
    TCP connection local_port → remote_port on loopback, from /proc/net/tcp; None if there is none."""
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state, queues = row.split()[1:5]
        ports = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
        if ports == (local_port, remote_port) and state == ESTABLISHED:
            sent, received = queues.split(":")
            return int(sent, 16), int(received, 16)
    return None


def read_by_server(client: socket.socket) -> bool:
    """Whether the server process has read every byte sent on ``client``'s connection: none waits in the client's
    send queue (unacknowledged), none in the receive queue of the server's end."""
    mine, theirs = client.getsockname()[1], client.getpeername()[1]
    server_end = tcp_queues(theirs, mine)
    return tcp_queues(mine, theirs) == (0, 0) and server_end is not None and server_end[1] == 0


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the sockets' queues in /proc/net/tcp")
def test_clients_that_disconnect_leave_no_traceback_and_a_healthy_uvicorn(tmp_path):
    """A real ``rewardlab serve`` on a port of its choosing: 20 clients send half a body and close, 20 send a whole
    body and close before the answer, each once the server has read what it sent. Nothing is logged as an error, and
    the server then answers /health and /score."""
    backbone = load_backbone(ModelSettings(name="tiny-llama"))
    folder = save_reward_model(backbone.model, backbone.tokenizer, tmp_path / "model", {}, {})
    command = [sys.executable, "-m", "rewardlab.cli", "serve", str(folder), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=subprocess_env())
    log = ServerLog(server)
    try:
        assert log.listening.wait(120) and log.port, log.text[-3000:]
        url = f"http://127.0.0.1:{log.port}"
        body = json.dumps({"prompts": ["hello " * 50] * 64, "responses": [" x"] * 64}).encode()
        head = (f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for k in range(40):
            with socket.create_connection(("127.0.0.1", log.port)) as s:
                s.sendall(head + (body[: len(body) // 2] if k % 2 else body))
                # half a body: the server waits for the rest; a whole one: it is working on the answer
                assert wait_until(functools.partial(read_by_server, s), timeout=30, interval=0.001), k
        assert httpx.get(f"{url}/health", timeout=60).json()["status"] == "ok"
        answer = httpx.post(f"{url}/score", json={"prompts": ["a"], "responses": ["b"]}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["rewards"]) == 1
    finally:
        server.terminate()
        server.wait(30)
        log.thread.join(30)
    text = log.text
    assert "Traceback" not in text and "ERROR" not in text and "Exception" not in text, text[-3000:]


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    backbone = load_backbone(ModelSettings(name="tiny-llama"))
    return save_reward_model(backbone.model, backbone.tokenizer, tmp_path_factory.mktemp("saved") / "model", {}, {})


def test_a_folder_with_only_pickle_weights_is_refused(saved_folder, tmp_path, capsys):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in saved_folder.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    model = load_backbone(ModelSettings(name="tiny-llama")).model
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ScoringError, match=r"no \.safetensors weights .*pytorch_model\.bin.*can run code"):
        RewardModel.load(str(folder))
    assert main(["serve", str(folder)]) == 2
    assert "loads weights only from safetensors" in capsys.readouterr().err


def test_a_model_with_its_own_code_is_refused_without_the_flag(saved_folder, tmp_path, monkeypatch, capsys):
    """``auto_map`` points at Python files in the folder; without --trust-remote-code they never run (that the flag
    reaches the loader: the next test)."""
    folder = tmp_path / "remote"
    folder.mkdir()
    for f in saved_folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    ran = tmp_path / "ran"
    (folder / "configuration_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('yes')\n"
        "from transformers import LlamaConfig\n\nclass CustomConfig(LlamaConfig):\n    model_type = 'custom'\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom", auto_map={"AutoConfig": "configuration_custom.CustomConfig"})
    (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(ScoringError, match="ships its own Python code .*--trust-remote-code"):
        RewardModel.load(str(folder))
    served = []
    monkeypatch.setattr("rewardlab.inference.server.serve", lambda model, *args, **kwargs: served.append(model))
    assert main(["serve", str(folder)]) == 2 and not served
    assert "--trust-remote-code" in capsys.readouterr().err
    assert not ran.exists()


def test_serve_listens_on_loopback_unless_told_and_passes_its_flags(saved_folder, monkeypatch, capsys):
    loaded, served = [], []
    monkeypatch.setattr(RewardModel, "load", classmethod(lambda cls, *args, **kwargs: loaded.append(kwargs) or "rm"))
    monkeypatch.setattr("rewardlab.inference.server.serve", lambda model, host, port, **options: served.append(host))
    assert main(["serve", str(saved_folder)]) == 0
    assert main(["serve", str(saved_folder), "--host", "0.0.0.0", "--trust-remote-code"]) == 0
    assert served == ["127.0.0.1", "0.0.0.0"]
    assert [kwargs["trust_remote_code"] for kwargs in loaded] == [False, True]
    assert "serving on 0.0.0.0 without --api-key" in capsys.readouterr().err
