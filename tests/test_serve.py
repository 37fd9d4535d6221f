import asyncio
import itertools
import json
import math
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from rewardlab.errors import ScoringError
from rewardlab.inference import server as serve_module
from rewardlab.inference.scorer import RewardModel
from rewardlab.inference.server import create_app


@pytest.fixture(scope="module")
def reward_model(tiny):
    b = tiny["tiny-llama"]
    return RewardModel.of(b.model, b.tokenizer, b.encoder, {"reward_mean": 0.01, "reward_std": 0.02}, max_length=64)


def count_forward_passes(monkeypatch, reward_model, app=None, requests: int = 0) -> list[int]:
    """Wrap the model call: record the rows of every forward pass. With ``requests``, the first pass waits until
    ``app``'s batcher has been handed all of them, so that the others pile up while the model is busy, as they do
    under load. Call it after ``create_app``, whose probe of the model is one more pass."""
    passes, forward, everyone_queued = [], reward_model.forward, threading.Event()
    if requests:
        batcher = app.state.batcher
        score, handed = batcher.score, itertools.count(1)

        async def counted_score(sequences):
            if next(handed) == requests:
                everyone_queued.set()
            # runs on up to its own ``await``, so the request is in the batcher's queue before the event loop can
            # see the first pass end
            return await score(sequences)

        monkeypatch.setattr(batcher, "score", counted_score)

    def counted(sequences):
        if requests and not passes:
            assert everyone_queued.wait(60), "the requests never all reached the batcher"
        passes.append(len(sequences))
        return forward(sequences)

    monkeypatch.setattr(reward_model, "forward", counted)
    return passes


async def concurrent_clients(app, bodies: list[dict]) -> list[dict]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rewardlab") as client:
        responses = await asyncio.gather(*(client.post("/score", json=body) for body in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json() for r in responses]


@pytest.mark.parametrize("merge", [True, False])
def test_concurrent_requests_are_merged_and_each_client_gets_its_own_rewards(reward_model, monkeypatch, merge):
    prompts = [f"Question {i}: " + "x" * (i % 9) for i in range(64)]
    responses = [" answer" * (1 + i % 5) for i in range(64)]
    expected = reward_model.score(prompts, responses)
    app = create_app(reward_model, merge=merge)
    passes = count_forward_passes(monkeypatch, reward_model, app, requests=64)
    monkeypatch.setattr(reward_model, "min_fill", 0.0)  # batches bounded by the token budget alone
    bodies = [{"prompts": [p], "responses": [r]} for p, r in zip(prompts, responses)]
    results = asyncio.run(concurrent_clients(app, bodies))

    assert [r["rewards"] for r in results] == [[pytest.approx(e, abs=1e-5)] for e in expected]
    assert sum(passes) == 64
    if merge:
        # the first pass serves what has arrived when it starts; the rest, queued meanwhile, share the next pass(es)
        assert len(passes) <= 4, passes
    else:
        assert len(passes) == 64


def test_merging_respects_the_token_budget(reward_model, monkeypatch):
    app = create_app(reward_model)
    passes = count_forward_passes(monkeypatch, reward_model, app, requests=20)
    monkeypatch.setattr(reward_model, "token_budget", 200)
    monkeypatch.setattr(reward_model, "min_fill", 0.0)
    bodies = [{"prompts": ["p" * 30], "responses": [" r"]} for _ in range(20)]  # 34 tokens each
    asyncio.run(concurrent_clients(app, bodies))
    assert sum(passes) == 20 and max(passes) == 5  # 5 × 34 ≤ 200 < 6 × 34


def test_a_request_split_over_several_passes_gets_all_its_rewards_in_order(reward_model, monkeypatch):
    app = create_app(reward_model)
    passes = count_forward_passes(monkeypatch, reward_model)
    monkeypatch.setattr(reward_model, "token_budget", 100)
    prompts, responses = [f"Q{i}:" for i in range(9)], [" a" * (1 + 4 * (i % 3)) for i in range(9)]
    [result] = asyncio.run(concurrent_clients(app, [{"prompts": prompts, "responses": responses}]))
    assert len(passes) > 1
    assert result["rewards"] == pytest.approx(reward_model.score(prompts, responses), abs=1e-5)


def test_a_failing_forward_pass_is_a_500_without_a_trace_and_the_server_goes_on(reward_model, monkeypatch):
    app, forward = create_app(reward_model), reward_model.forward
    monkeypatch.setattr(reward_model, "forward", lambda sequences: 1 / 0)
    with TestClient(app, raise_server_exceptions=False) as client:
        body = {"prompts": ["a"], "responses": ["b"]}
        response = client.post("/score", json=body)
        assert response.status_code == 500 and response.json() == {"detail": "internal error (ZeroDivisionError)"}
        monkeypatch.setattr(reward_model, "forward", forward)
        assert client.post("/score", json=body).status_code == 200


def test_encoding_runs_off_the_event_loop(reward_model, monkeypatch):
    """While one request is being encoded, /health and other requests are answered. The encoding below waits until
    /health has answered: on the event loop it would wait for ever (10 s, then fail), in a thread it goes on."""
    app, encode = create_app(reward_model), reward_model.encode
    encoding, health_answered = threading.Event(), threading.Event()

    def slow_encode(prompt, response):
        if prompt == "slow":
            encoding.set()
            assert health_answered.wait(10), "/health was not answered while a request was being encoded"
        return encode(prompt, response)

    monkeypatch.setattr(reward_model, "encode", slow_encode)

    async def clients():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rewardlab") as client:
            slow = asyncio.create_task(client.post("/score", json={"prompts": ["slow"], "responses": ["b"]}))
            await asyncio.wait_for(asyncio.to_thread(encoding.wait), 20)
            health = await client.get("/health")
            other = await client.post("/score", json={"prompts": ["quick"], "responses": ["b"]})
            health_answered.set()
            return health, other, await slow

    health, other, slow = asyncio.run(clients())
    assert health.status_code == other.status_code == slow.status_code == 200, slow.text
    assert slow.json()["rewards"] == pytest.approx(reward_model.score(["slow"], ["b"]), abs=1e-6)


@pytest.fixture
def client(reward_model):
    with TestClient(create_app(reward_model, max_items=8, max_body_bytes=2000)) as client:
        yield client


def test_score_endpoint_plain_and_chat(client, reward_model):
    chat = [{"role": "user", "content": "hi"}]
    body = {"prompts": ["Q:", chat, chat], "responses": [" yes", "hello", [{"role": "assistant", "content": "hello"}]]}
    response = client.post("/score", json=body)
    assert response.status_code == 200
    rewards = response.json()["rewards"]
    assert rewards == pytest.approx(reward_model.score(body["prompts"], body["responses"]), abs=1e-6)
    assert rewards[1] == pytest.approx(rewards[2], abs=1e-6)
    normalized = client.post("/score", json={**body, "normalize": True}).json()["rewards"]
    assert normalized == pytest.approx([(r - 0.01) / 0.02 for r in rewards], abs=1e-4)


def test_get_reward_is_openrlhf_protocol(client, reward_model):
    """OpenRLHF sends whole texts (with extra keys in newer versions) and reads ``rewards``."""
    queries = ["Human: hi\n\nAssistant: hello", "<s>Q: 2+2? 4</s><pad><pad>"]
    response = client.post("/get_reward", json={"query": queries, "prompts": ["Human: hi", "Q: 2+2?"], "labels": []})
    assert response.status_code == 200
    rewards = response.json()["rewards"]
    assert rewards == pytest.approx(reward_model.score(["", ""], [queries[0], "Q: 2+2? 4"]), abs=1e-6)


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize("body, status, message", [
    ('{"prompts": ["a"], "responses": ', 400, "malformed JSON"),
    ("", 400, "malformed JSON"),
    ('["a", "b"]', 422, "body: Input should be an object"),
    ('{"prompts": "a", "responses": "b"}', 422, "prompts"),
    ('{"prompts": [1], "responses": ["b"]}', 422, "prompts.0"),
    ('{"prompts": [null], "responses": ["b"]}', 422, "prompts.0"),
    ('{"prompts": ["a"], "responses": [{"role": "assistant"}]}', 422, "responses.0"),
    ('{"prompts": ["a", "b"], "responses": ["c"]}', 422, "2 prompts but 1 responses"),
    ('{"prompts": [], "responses": []}', 422, "at least 1 item"),
    ('{"prompts": [[]], "responses": [[]]}', 422, "responses.0"),
    ('{"prompt": ["a"], "responses": ["b"]}', 422, "prompt: Extra inputs"),
    ('{"prompts": ["a"], "responses": [[{"role": "assistant", "content": "b"}]]}', 422, "list of {role, content}"),
    ('{"prompts": ["a"], "responses": ["b"], "normalize": "yes"}', 422, "normalize: Input should be a valid boolean"),
    ('{"prompts": ["a"], "responses": ["b"], "normalize": 1}', 422, "normalize: Input should be a valid boolean"),
    ('{"prompts": [[{"role": "user", "content": 5}]], "responses": ["b"]}', 422, "content"),
    ('{"prompts": [1e999], "responses": ["b"]}', 422, "prompts.0"),
    ('{"prompts": ["a"], "responses": ["b"], "normalize": 123456789012345678901234567890}', 422, "normalize"),
    ('{"prompts": ["\\ud800"], "responses": ["b"]}', 400, "malformed JSON"),  # a lone surrogate
    ('{"prompts": ["\\udc00 x"], "responses": ["b"]}', 400, "surrogate"),
    ('{"prompts": [' + "[" * 300 + "]" * 300 + '], "responses": ["b"]}', 400, "recursion limit"),
    (json.dumps({"prompts": ["a"] * 9, "responses": ["b"] * 9}), 413, "at most 8"),
    (json.dumps({"prompts": ["a" * 3000], "responses": ["b"]}), 413, "over 2000 bytes"),
])
def test_bad_requests_get_4xx_with_a_message(client, body, status, message):
    response = client.post("/score", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_invalid_utf8_is_400(client):
    response = client.post("/score", content=b'{"prompts": ["\xff\xfe"], "responses": ["b"]}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "invalid unicode" in response.json()["detail"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_a_body_not_sent_as_json_is_415(client, content_type):
    """text/plain, form and multipart bodies are what a web page can post cross-origin without a CORS preflight."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/score", content=b'{"prompts": ["a"], "responses": ["b"]}', headers=headers)
    assert response.status_code == 415 and "application/json" in response.json()["detail"]


def test_json_with_a_charset_is_accepted(client):
    response = client.post("/score", content=b'{"prompts": ["a"], "responses": ["b"]}',
                           headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert response.status_code == 200


def test_wrong_methods_and_routes(client):
    assert client.get("/score").status_code == 405
    assert client.put("/get_reward", json={"query": ["a"]}).status_code == 405
    assert client.post("/health").status_code == 405
    assert client.post("/nope", json={}).status_code == 404


def test_bad_get_reward_requests(client):
    assert client.post("/get_reward", json={"query": []}).status_code == 422
    assert client.post("/get_reward", json={"queries": ["a"]}).status_code == 422
    assert client.post("/get_reward", json={"query": [None]}).status_code == 422
    assert client.post("/get_reward", json={"query": ["a"] * 9}).status_code == 413


def test_oversize_body_without_content_length_is_413(client):
    chunks = iter([b'{"query": ["' + b"a" * 1500, b"a" * 1500 + b'"]}'])
    response = client.post("/get_reward", content=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_a_chat_template_that_raises_is_422_naming_the_item(client, reward_model, monkeypatch):
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system messages') }}{% endif %}x"
    monkeypatch.setattr(reward_model.tokenizer, "chat_template", template)
    system = [{"role": "system", "content": "be nice"}]
    response = client.post("/score", json={"prompts": ["a", system], "responses": ["b", "c"]})
    assert response.status_code == 422
    assert response.json()["detail"] == ("item 1: the chat template refused these messages: TemplateError: "
                                         "no system messages")


def test_an_unscorable_item_is_422_naming_it(client, reward_model, monkeypatch):
    monkeypatch.setattr(reward_model.tokenizer, "chat_template", None)
    response = client.post("/score", json={"prompts": ["a", [{"role": "user", "content": "b"}]],
                                           "responses": ["c", "d"]})
    assert response.status_code == 422 and response.json()["detail"].startswith("item 1: messages need a tokenizer")


def test_normalize_without_statistics_is_422(tiny):
    b = tiny["tiny-llama"]
    with TestClient(create_app(RewardModel.of(b.model, b.tokenizer, b.encoder))) as client:
        response = client.post("/score", json={"prompts": ["a"], "responses": ["b"], "normalize": True})
    assert response.status_code == 422 and "reward mean and std" in response.json()["detail"]


def test_a_model_with_non_finite_rewards_is_refused_at_start(reward_model, monkeypatch):
    monkeypatch.setattr(reward_model, "forward", lambda sequences: [[math.nan] * len(sequences)])
    with pytest.raises(ScoringError, match=r"non-finite reward \(nan\) to a probe text.*refusing to serve"):
        create_app(reward_model)


def test_non_finite_rewards_for_some_inputs_are_a_500_that_says_so(reward_model, monkeypatch):
    """Never NaN in the body (not JSON); the server goes on serving the inputs it can score."""
    app, forward = create_app(reward_model), reward_model.forward
    monkeypatch.setattr(reward_model, "forward", lambda sequences: [[
        math.inf if len(s) > 30 else r for s, r in zip(sequences, forward(sequences)[0])]])
    with TestClient(app) as client:
        response = client.post("/score", json={"prompts": ["a", "b" * 40], "responses": ["c", "d"]})
        assert response.status_code == 500
        assert response.json()["detail"].startswith("the model gave a non-finite reward (inf) to 1 of 2 items "
                                                    "(first: item 1)")
        assert client.post("/score", json={"prompts": ["a"], "responses": ["c"]}).status_code == 200
        assert client.get("/health").status_code == 200


def test_api_key(reward_model):
    with TestClient(create_app(reward_model, api_key="s3cret")) as client:
        body = {"prompts": ["a"], "responses": ["b"]}
        assert client.post("/score", json=body).status_code == 401
        assert client.post("/score", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/get_reward", json={"query": ["a"]}).status_code == 401
        assert client.post("/score", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/score", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_the_key_is_compared_in_constant_time(reward_model, monkeypatch):
    compared = []
    compare = serve_module.secrets.compare_digest
    monkeypatch.setattr(serve_module.secrets, "compare_digest", lambda a, b: compared.append((a, b)) or compare(a, b))
    with TestClient(create_app(reward_model, api_key="s3cret")) as client:
        assert client.post("/get_reward", json={"query": ["a"]}, headers={"X-API-Key": "s3creT"}).status_code == 401
    assert compared == [(b"s3creT", b"s3cret")]


def test_docs_are_closed_when_a_key_is_set(reward_model):
    with TestClient(create_app(reward_model, api_key="s3cret")) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 404, path
    with TestClient(create_app(reward_model)) as client:
        assert client.get("/openapi.json").status_code == 200
