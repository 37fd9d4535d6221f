"""The server under load: concurrent clients on loopback against ``rewardlab serve``, merging on and off.

    python -m benchmarks.serve_load --model minilm-l6 [--clients 64] [--requests 2000] [--time-limit 900]
                                         [--disconnects 100] [--big-body-mb 5]

Starts ``rewardlab serve`` in a subprocess on 127.0.0.1 (a free port), once as is and once with ``--no-merge``.
``--clients`` asyncio clients (httpx, one connection each) send one (prompt, response) per ``POST /score``, taken in
order from the same shared data as :mod:`benchmarks.score_throughput`, until ``--requests`` requests are done
or ``--time-limit`` seconds have passed (requests still open then are cancelled and counted). Reports per mode the
throughput (requests/s), p50/p99 latency and errors, and checks that both modes gave every request the same
reward. ``--model`` is a saved folder, or a backbone name saved once with a fresh 1-output head.

Then, on the merging server: ``--disconnects`` clients at once each send a 64-item request and hang up, half of
them halfway through the body and half once it is sent; reported are the server's resident memory (RSS) before and
after, whether it still answers, and the error lines in its log. Last, one request whose prompt is a
``--big-body-mb`` text, while ``/health`` is polled: how long that request took, the slowest ``/health`` answer
meanwhile, and the server's peak RSS. Prints one JSON object (and writes it with ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.score_throughput import SHARED_DATA, shared_responses


def saved_model(name: str, folder: Path) -> Path:
    """``name`` if it is a folder, else the backbone ``name`` with a fresh head, saved into ``folder``."""
    if Path(name).is_dir():
        return Path(name)
    from rewardlab.config import ModelSettings
    from rewardlab.models.loading import load_backbone
    from rewardlab.models.saved import save_reward_model

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


def rss_mb(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process in MiB (``VmHWM``: its peak), from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) // 1024


async def hang_ups(port: int, body: bytes, clients: int) -> None:
    """``clients`` connections at once, each sending a POST /score and closing before the answer: the odd ones
    halfway through the body, the even ones once the whole body is sent."""
    head = (f"POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + (body[: len(body) // 2] if k % 2 else body))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(client(k) for k in range(clients)))


def disconnects(process: subprocess.Popen, url: str, items: list[tuple[str, str]], clients: int, log: Path) -> dict:
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"prompts": [p for p, _ in items[:64]], "responses": [r for _, r in items[:64]]}).encode()
    errors_before = log_errors(log)
    before = rss_mb(process.pid)
    asyncio.run(hang_ups(port, body, clients))
    answer = httpx.post(f"{url}/score", json={"prompts": ["after"], "responses": ["all that"]}, timeout=600)
    time.sleep(2)
    return {"clients": clients, "items_each": 64, "rss_mb_before": before, "rss_mb_after": rss_mb(process.pid),
            "healthy_after": httpx.get(f"{url}/health", timeout=60).status_code == 200 and answer.status_code == 200,
            "error_lines_in_log": log_errors(log) - errors_before}


def log_errors(log: Path) -> int:
    return sum(("Traceback" in line or "ERROR" in line) for line in log.read_text(errors="replace").splitlines())


def big_body(process: subprocess.Popen, url: str, items: list[tuple[str, str]], megabytes: float) -> dict:
    """One request whose prompt is ``megabytes`` of real text, with /health polled meanwhile."""
    text = " ".join(p for p, _ in items)
    prompt = (text * (1 + int(megabytes * 1e6) // len(text)))[: int(megabytes * 1e6)]
    result = {}

    def send() -> None:
        start = time.perf_counter()
        answer = httpx.post(f"{url}/score", json={"prompts": [prompt], "responses": [" Yes."]}, timeout=900)
        result.update(status=answer.status_code, seconds=round(time.perf_counter() - start, 1))

    before, sender = rss_mb(process.pid), threading.Thread(target=send)
    sender.start()
    polls, slowest = 0, 0.0
    while sender.is_alive():
        start = time.perf_counter()
        httpx.get(f"{url}/health", timeout=900)
        slowest, polls = max(slowest, time.perf_counter() - start), polls + 1
        time.sleep(0.1)
    sender.join()
    return {"megabytes": megabytes, **result, "health_polls": polls, "slowest_health_ms": round(1000 * slowest, 1),
            "rss_mb_before": before, "rss_mb_peak": rss_mb(process.pid, "VmHWM")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm-l6", help="a saved model folder, or a backbone name")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--time-limit", type=float, default=900, help="seconds per mode; open requests are then cancelled")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--token-budget", type=int, help="default: rewardlab's (16384 on a GPU, 2048 on CPU)")
    p.add_argument("--disconnects", type=int, default=100, help="clients that hang up mid-request")
    p.add_argument("--big-body-mb", type=float, default=5.0, help="size of the one big request's prompt")
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
                if mode == "merge":
                    log = Path(tmp) / f"{mode}.log"
                    result["disconnects"] = disconnects(process, url, items, args.disconnects, log)
                    result["big_body"] = big_body(process, url, items, args.big_body_mb)
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
