"""The HTTP server over :class:`~rewardlab.inference.scorer.RewardModel`: ``rewardlab serve MODEL``.

- ``POST /score`` ``{"prompts": [...], "responses": [...]}`` → ``{"rewards": [...]}``; prompts and responses are
  strings or lists of ``{role, content}`` messages (as :meth:`RewardModel.score` takes them); an optional
  ``"normalize": true/false`` overrides the server's default. An ensemble also answers ``"uncertainty"``: the
  members' standard deviation per response; with ``"members": true`` every member's rewards (``[members][n]``; one
  model is an ensemble of one), and ``rewards`` is their combination.
- ``POST /get_reward`` ``{"query": [...]}`` → ``{"rewards": [...]}``: the remote reward-model protocol of OpenRLHF
  (``--remote_rm_url http://HOST:PORT/get_reward``); each query is a whole text, prompt and response joined.
- ``GET /health`` → ``{"status": "ok", ...}`` (no key needed).

Requests that arrive while the model is busy are merged into the next forward pass: one worker runs every pass,
each serving the oldest waiting sequence together with the waiting sequences of similar length that fit the token
budget, whichever requests they came from. So 64 clients sending one item each cost a handful of forward passes, not
64, and no request waits behind a stream of newer ones. The passes run in a thread, so the event loop keeps
accepting requests meanwhile; each request awaits only its own results.

Encoding (tokenizing, chat rendering) runs in threads too, so a big body delays only its own answer: ``/health``
and other requests are answered meanwhile. A client that goes away before its answer gives up its waiting items (they
are not computed) and leaves nothing in the log.

Bad requests get a 4xx and a message (``{"detail": ...}``), never a 500: 400 malformed JSON (invalid UTF-8, lone
surrogates and nesting past the parser's depth limit included); 401 a missing or wrong key when the server has one
(``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); 404/405 unknown routes and methods; 413 a body over
``max_body_bytes`` or more than ``max_items`` items; 415 a body not sent as ``application/json`` (so a web page
cannot post to the server without a CORS preflight, which the server does not answer); 422 wrong types (strict: no
``"yes"`` for true, no number for a string), unknown keys, empty lists, length mismatch, a chat template that raises.
With an API key, ``/docs`` and ``/openapi.json`` are off.

A model that gives a non-finite reward is broken, not the request: the server refuses to start when the reward of a
probe text is not finite, and a request whose rewards are not all finite gets a 500 that says so (never ``NaN``,
which is not JSON).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import ClientDisconnect

from rewardlab.errors import ScoringError
from rewardlab.inference.scorer import RewardModel


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # chat templates may read more keys than role and content
    role: str
    content: str


class ScoreRequest(BaseModel):
    """Strict types: ``"normalize": "yes"`` or ``"prompts": [1]`` are errors, not guesses."""

    model_config = ConfigDict(extra="forbid", strict=True)
    prompts: list[str | list[Message]] = Field(min_length=1)  # [] is a conversation with no prompt before the reply
    responses: list[str | Annotated[list[Message], Field(min_length=1)]] = Field(min_length=1)
    normalize: bool | None = None
    members: bool = False

    @model_validator(mode="after")
    def same_length(self):
        if len(self.prompts) != len(self.responses):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.responses)} responses; "
                             f"give one prompt per response")
        return self


class RewardRequest(BaseModel):
    """OpenRLHF's body. Newer OpenRLHF versions also send ``prompts`` and ``labels``; they are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    query: list[str] = Field(min_length=1)


class Job:
    """One request's sequences, and where their rewards go."""

    def __init__(self, sequences: list[list[int]], future: asyncio.Future):
        self.sequences, self.future = sequences, future
        self.rewards: list[float | None] = [None] * len(sequences)
        self.missing = len(sequences)


class Batcher:
    """One worker that runs the forward passes for all requests.

    Each pass serves the oldest waiting sequence together with the waiting sequences of similar length that fit the
    token budget (:meth:`RewardModel.batches`), whichever requests they came from, so requests that arrive while the
    model is busy join the next pass and none waits behind a stream of newer ones. With ``merge=False`` requests are
    served one after another, each in its own passes.
    """

    def __init__(self, reward_model: RewardModel, merge: bool = True):
        self.reward_model, self.merge = reward_model, merge
        self._loop = self._queue = self._worker = None

    def run(self, sequences: list[list[int]]) -> list[tuple]:
        """One forward pass: per sequence, every member's raw outputs (combined per request)."""
        return list(zip(*self.reward_model.forward(sequences)))

    async def score(self, sequences: list[list[int]]) -> list[float]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the first request (started lazily, so that any ASGI runner works)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run())
        job = Job(sequences, loop.create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        waiting: list[tuple[Job, int]] = []  # (job, sequence index), oldest first
        while True:
            while not waiting:
                waiting += self._items(await self._queue.get())
            while self.merge and not self._queue.empty():
                waiting += self._items(self._queue.get_nowait())
            lengths = [len(job.sequences[i]) for job, i in waiting]
            batch = set(next(b for b in self.reward_model.batches(lengths) if 0 in b))
            served = [waiting[k] for k in sorted(batch)]
            try:
                rewards = await asyncio.to_thread(self.run, [job.sequences[i] for job, i in served])
            except Exception as e:
                for job, _ in served:
                    if not job.future.done():
                        job.future.set_exception(e)
            else:
                for (job, i), reward in zip(served, rewards):
                    job.rewards[i], job.missing = reward, job.missing - 1
                    if not job.missing and not job.future.done():
                        job.future.set_result(job.rewards)
            # drop what was served, and the rest of failed requests and of clients that went away
            waiting = [(job, i) for k, (job, i) in enumerate(waiting) if k not in batch and not job.future.done()]

    @staticmethod
    def _items(job: Job) -> list[tuple[Job, int]]:
        """The job's sequences; none when its client has gone (its future is cancelled) while it was queued."""
        return [] if job.future.done() else [(job, i) for i in range(len(job.sequences))]

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()


def create_app(reward_model: RewardModel, api_key: str | None = None, max_items: int = 4096,
               max_body_bytes: int = 16 * 2**20, merge: bool = True, normalize: bool = False) -> FastAPI:
    """The FastAPI app; ``merge=False`` gives every request its own forward passes (for comparison)."""
    check_finite(reward_model)
    if normalize:
        reward_model.check_normalizable()  # fail at start-up, not at the first request, when there are no statistics
    batcher = Batcher(reward_model, merge)

    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    closed = {"docs_url": None, "redoc_url": None, "openapi_url": None} if api_key else {}
    app = FastAPI(title="rewardlab", lifespan=lifespan, **closed)
    app.state.batcher = batcher

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        return Response(status_code=499)  # nobody reads it; handled here so that nothing is logged as an error

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if given is None and scheme.lower() == "bearer":
            given = token.strip()
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    async def read(request: Request, body_type: type[BaseModel]):
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(415, f"send the body as Content-Type: application/json, not {media_type or 'none'}")
        too_large = HTTPException(413, f"request body over {max_body_bytes} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise too_large
        try:
            return body_type.model_validate_json(bytes(body))
        except ValidationError as e:
            raise HTTPException(*describe(e)) from None

    def check_items(n: int) -> None:
        if n > max_items:
            raise HTTPException(413, f"{n} items in one request; at most {max_items}")

    def encode_all(encode, items) -> list[list[int]]:
        sequences = []
        for i, item in enumerate(items):
            try:
                sequences.append(encode(*item))
            except ScoringError as e:  # incl. a chat template that refuses the messages (raise_exception)
                raise HTTPException(422, f"item {i}: {e}") from None
        return sequences

    async def rewards_of(request: Request, encode, items, normalize_now: bool, details: bool = False,
                         members: bool = False) -> dict:
        if normalize_now:
            try:
                reward_model.check_normalizable()
            except ScoringError as e:
                raise HTTPException(422, str(e)) from None
        sequences = await asyncio.to_thread(encode_all, encode, items)  # off the event loop: big bodies take seconds
        outputs = await unless_disconnected(request, batcher.score(sequences))
        scores = reward_model.combine([list(m) for m in zip(*outputs)], normalize_now)
        bad = [i for i, r in enumerate(scores.rewards) if not math.isfinite(r)]
        if bad:
            raise HTTPException(500, f"the model gave a non-finite reward ({scores.rewards[bad[0]]}) to {len(bad)} of "
                                     f"{len(scores.rewards)} items (first: item {bad[0]}); the model is numerically "
                                     "broken on these inputs (e.g. an overflow in half precision), the request is "
                                     "fine")
        answer = {"rewards": scores.rewards}
        if details and reward_model.size > 1:
            answer["uncertainty"] = scores.uncertainty
        if members:
            answer["members"] = scores.members
        return answer

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": reward_model.name, "max_length": reward_model.max_length,
                "token_budget": reward_model.token_budget, "merge": merge} | (
                    {"members": reward_model.size, "reward": reward_model.combination.reward}
                    if reward_model.size > 1 else {})

    @app.post("/score", dependencies=[Depends(authorize)])
    async def score(request: Request):
        body = await read(request, ScoreRequest)
        check_items(len(body.prompts))
        items = [(plain(p), plain(r)) for p, r in zip(body.prompts, body.responses)]
        normalize_now = normalize if body.normalize is None else body.normalize
        return await rewards_of(request, reward_model.encode, items, normalize_now, details=True,
                                members=body.members)

    @app.post("/get_reward", dependencies=[Depends(authorize)])
    async def get_reward(request: Request):
        body = await read(request, RewardRequest)
        check_items(len(body.query))
        return await rewards_of(request, reward_model.encode_text, [(q,) for q in body.query], normalize)

    return app


def check_finite(reward_model: RewardModel) -> None:
    """Refuse a model whose reward of a probe text is NaN or infinite (a diverged run): it could answer nothing."""
    [reward] = reward_model.score(["How do I water a cactus?"], [" Every two to three weeks."])
    if not math.isfinite(reward):
        raise ScoringError(f"{reward_model.name} gives a non-finite reward ({reward}) to a probe text: its weights "
                           f"are broken (did training diverge?); refusing to serve it")


async def unless_disconnected(request: Request, work):
    """The result of ``work``; if the client goes away first, ``work`` is cancelled (its items leave the queue
    uncomputed) and :class:`ClientDisconnect` is raised."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(request))
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnect()
    return task.result()


async def disconnected(request: Request) -> None:
    """Returns when the client disconnects (once the body is read, the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def plain(text: str | list[Message]) -> str | list[dict]:
    return text if isinstance(text, str) else [m.model_dump() for m in text]


def describe(error: ValidationError) -> tuple[int, str]:
    """(status, message) of a body that failed validation: 400 for malformed JSON, else 422."""
    errors = error.errors(include_url=False)
    if errors[0]["type"] == "json_invalid":
        return 400, f"malformed JSON: {errors[0]['msg']}"
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:6]]
    return 422, "; ".join(parts) + (f"; and {len(errors) - 6} more" if len(errors) > 6 else "")


def serve(reward_model: RewardModel, host: str = "127.0.0.1", port: int = 8000, **app_options) -> None:
    """Run the app with uvicorn (blocking); ``app_options`` go to :func:`create_app`."""
    import uvicorn

    uvicorn.run(create_app(reward_model, **app_options), host=host, port=port)
