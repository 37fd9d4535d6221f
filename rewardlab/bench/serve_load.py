"""The server under load: concurrent clients on loopback against ``rewardlab serve``, merging on and off.

    python -m rewardlab.bench.serve_load --model minilm-l6 [--clients 64] [--requests 2000] [--time-limit 900]

Starts ``rewardlab serve`` in a subprocess on 127.0.0.1 (a free port), once as is and once with ``--no-merge``.
``--clients`` asyncio clients (httpx, one connection each) send one (prompt, response) per ``POST /score``, taken in
order from the same shared data as :mod:`rewardlab.bench.score_throughput`, until ``--requests`` requests are done
or ``--time-limit`` seconds have passed (requests still open then are cancelled and counted). Reports per mode the
throughput (requests/s), p50/p99 latency and errors, and checks that both modes gave every request the same
reward. ``--model`` is a saved folder, or a backbone name saved once with a fresh 1-output head.
Prints one JSON object (and writes it with ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rewardlab.bench.score_throughput import SHARED_DATA, shared_responses


def saved_model(name: str, folder: Path) -> Path:
    """``name`` if it is a folder, else the backbone ``name`` with a fresh head, saved into ``folder``."""
    if Path(name).is_dir():
        return Path(name)
    from rewardlab.backbones import load_backbone
    from rewardlab.config import ModelSettings
    from rewardlab.save import save_reward_model

    backbone = load_backbone(ModelSettings(name=name))
    return save_reward_model(backbone.model, backbone.tokenizer, folder, {}, {})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, options: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "rewardlab.cli", "serve", str(model), "--port", str(port), *options]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                # warm-up: the first forward pass pays one-off allocations and kernel selection
                httpx.post(f"{url}/score", json={"prompts": ["warm"], "responses": ["up"]}, timeout=300)
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the server did not answer /health within 300 s; see {log}")


async def run_clients(url: str, items: list[tuple[str, str]], clients: int, time_limit: float) -> dict:
    """Send every item as its own request from ``clients`` concurrent clients; stop at ``time_limit`` seconds."""
    rewards: dict[int, float] = {}
    latencies, errors = [], []
    pending = iter(range(len(items)))

    async def client(http: httpx.AsyncClient) -> None:
        for i in pending:
            prompt, response = items[i]
            start = time.perf_counter()
            try:
                answer = await http.post("/score", json={"prompts": [prompt], "responses": [response]})
                rewards[i] = answer.json()["rewards"][0] if answer.status_code == 200 else None
                problem = None if answer.status_code == 200 else f"{answer.status_code} {answer.text[:200]}"
            except (httpx.HTTPError, ValueError, KeyError) as e:
                rewards[i], problem = None, f"{type(e).__name__}: {e}"
            if problem:
                errors.append(f"request {i}: {problem}")
            else:
                latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=time_limit, limits=limits) as http:
        start = time.perf_counter()
        tasks = [asyncio.create_task(client(http)) for _ in range(clients)]
        _, unfinished = await asyncio.wait(tasks, timeout=time_limit)
        for task in unfinished:
            task.cancel()
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests_done": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cancelled_at_time_limit": len(unfinished) > 0,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "latency_p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
        if latencies else None,
        "rewards": rewards,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm-l6", help="a saved model folder, or a backbone name")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--time-limit", type=float, default=900, help="seconds per mode; open requests are then cancelled")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--token-budget", type=int, help="default: rewardlab's (16384 on a GPU, 2048 on CPU)")
    p.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)

    items = shared_responses(args.requests, args.data_dir)
    result = {"model": args.model, "clients": args.clients, "requests": args.requests,
              "max_length": args.max_length}
    with tempfile.TemporaryDirectory() as tmp:
        model = saved_model(args.model, Path(tmp) / "model")
        for mode, flags in (("merge", []), ("no_merge", ["--no-merge"])):
            options = ["--max-length", str(args.max_length), *flags]
            options += ["--token-budget", str(args.token_budget)] if args.token_budget else []
            process, url = start_server(model, options, Path(tmp) / f"{mode}.log")
            try:
                result["token_budget"] = httpx.get(f"{url}/health").json()["token_budget"]
                result[mode] = asyncio.run(run_clients(url, items, args.clients, args.time_limit))
            finally:
                process.terminate()
                process.wait(30)
    merged, alone = result["merge"].pop("rewards"), result["no_merge"].pop("rewards")
    both = [i for i in merged if merged[i] is not None and alone.get(i) is not None]
    result["max_abs_reward_difference"] = max((abs(merged[i] - alone[i]) for i in both), default=None)
    merged_rate, alone_rate = result["merge"]["requests_per_s"], result["no_merge"]["requests_per_s"]
    result["throughput_ratio"] = round(merged_rate / alone_rate, 2) if alone_rate else None
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
