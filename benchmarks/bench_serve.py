"""Load benchmark of `newsrank serve`: requests/s and latency percentiles of POST /recommend.

Starts `python -m newsrank serve` as a subprocess on a free loopback port, waits for /health,
sends a fixed number of requests at a fixed concurrency (keep-alive HTTP/1.1 connections from one
asyncio client; a warm-up round first, not counted), stops the server and prints one row per
(run, workload):

* ``pool``: ``{"history": <a dev user's clicks>, "k": 10}``: exact top-10 over the whole pool
  (candidate-aware models: over their bounded pool, ``--candidate-pool``);
* ``cand100``: the same history with 100 given candidates (seeded draws from the pool) ranked.

Start-up is the wall time from spawning the server to its first healthy /health (Python and
torch imports included), with the server's own load + read + encode time beside it.

It trains nothing: give it runs. For the README's table, an NRMS run on mlsmall_mind:

    python -m newsrank train --model nrms --data ../shared/data/mlsmall_mind --out runs/nrms_ml \\
        --epochs 1 --set embeddings=glove-6b-50d --set threads=1
    python benchmarks/bench_serve.py --run runs/nrms_ml --data ../shared/data/mlsmall_mind

The client shares the machine with the server (and, on a shared machine, with whatever else
runs): the figures are for that whole set-up, not for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_news import commit, machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Connection:
    """One keep-alive HTTP/1.1 connection (the lightest client there is, so that the client takes
    as little of the shared CPU as possible)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        self.writer.close()


async def load(port: int, bodies: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    """Send every body once, ``concurrency`` at a time; (seconds, latencies in ms)."""
    connections = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    latencies = np.zeros(len(bodies))
    queue = iter(range(len(bodies)))

    async def worker(connection: Connection) -> None:
        for i in queue:
            start = time.perf_counter()
            status, payload = await connection.post("/recommend", bodies[i])
            latencies[i] = 1000 * (time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {payload[:300]!r}")

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    seconds = time.perf_counter() - start
    for c in connections:
        c.close()
    return seconds, latencies


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 600) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the server did not become healthy")


def get_json(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.loads(response.read())


def histories(behaviors: Path, news: set[str], n: int, seed: int) -> list[list[str]]:
    """Clicked-news lists of ``n`` impressions drawn from ``behaviors.tsv`` (seeded), ids the pool
    lacks dropped, empty histories skipped."""
    rows = []
    with open(behaviors, encoding="utf-8") as handle:
        for line in handle:
            history = [x for x in line.rstrip("\n").split("\t")[3].split() if x in news]
            if history:
                rows.append(history)
    rng = random.Random(seed)
    return [rows[rng.randrange(len(rows))] for _ in range(n)]


def bench_run(args, run: str) -> list[dict]:
    news_path = Path(args.news or Path(args.data) / "train" / "news.tsv")
    behaviors_path = Path(args.behaviors or Path(args.data) / "dev" / "behaviors.tsv")
    pool_ids = [line.split("\t", 1)[0] for line in news_path.read_text(encoding="utf-8").splitlines() if line]
    port = free_port()
    command = [sys.executable, "-m", "newsrank", "serve", "--run", run, "--news", str(news_path), "--port", str(port),
               "--threads", str(args.threads), "--max-batch", str(args.max_batch), "--candidate-pool", str(args.candidate_pool), "-q"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    rows = []
    try:
        wait_healthy(port, process)
        startup = time.perf_counter() - started
        info = get_json(port, "/model")
        total = args.requests + args.warmup
        picked = histories(behaviors_path, set(pool_ids), total, args.seed)
        rng = random.Random(args.seed + 1)
        workloads = {
            "pool": [json.dumps({"history": h, "k": 10}).encode() for h in picked],
            f"cand{args.candidates}": [json.dumps({"history": h, "k": 10, "candidates": rng.sample(pool_ids, args.candidates)})
                                       .encode() for h in picked],
        }
        for name in args.workloads or workloads:
            bodies = workloads[name]
            asyncio.run(load(port, bodies[: args.warmup], args.concurrency))  # warm-up, not counted
            seconds, latencies = asyncio.run(load(port, bodies[args.warmup:], args.concurrency))
            rows.append({"model": info["model"], "run": run, "workload": name, "pool": info["pool_size"]
                         if not info["candidate_aware"] or name != "pool" else min(info["pool_size"], args.candidate_pool),
                         "requests": args.requests, "concurrency": args.concurrency,
                         "req_per_s": args.requests / seconds,
                         "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
                         "p99_ms": float(np.percentile(latencies, 99)), "startup_s": startup,
                         "server_startup_s": info["startup_s"]})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table of ``rows``, each row's command, commit and machine as a numbered note."""
    notes: dict[tuple, int] = {}
    lines = ["| model | workload | ranked per request | req/s | p50 ms | p95 ms | p99 ms | start-up s (server's own) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = (r["command"], r["commit"], r["machine"], r["load"])
        n = notes.setdefault(key, len(notes) + 1)
        batch = "" if r.get("max_batch", 32) > 1 or r["workload"] != "pool" else " (--max-batch 1)"
        ranked = r["workload"][4:] if r["workload"].startswith("cand") else r["pool"]  # candidates, or the pool
        lines.append(f"| {r['model']} [{n}] | {r['workload']}{batch} | {ranked} | {r['req_per_s']:.0f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['startup_s']:.2f} "
                     f"({r['server_startup_s']:.2f}) |")
    lines.append("")
    for (command, sha, where, load), n in notes.items():
        lines.append(f"[{n}] commit {sha}, {where}, load average {load} at the start: `{command}`  ")
    return "\n".join(lines)


def write_block(path: Path, marker: str, text: str) -> None:
    """Replace the block between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in ``path``."""
    content = path.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in content or end not in content:
        raise SystemExit(f"{path}: no {start} ... {end} block")
    head, rest = content.split(start, 1)
    path.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", help="run folder(s) to serve, one after another (repeatable)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mlsmall_mind"),
                        help="MIND-format folder: pool = train/news.tsv, histories from dev/behaviors.tsv")
    parser.add_argument("--news", help="news.tsv of the pool (default DATA/train/news.tsv)")
    parser.add_argument("--behaviors", help="behaviors.tsv to draw histories from (default DATA/dev/behaviors.tsv)")
    parser.add_argument("--requests", type=int, default=2000, help="counted requests per workload")
    parser.add_argument("--warmup", type=int, default=100, help="requests sent first and not counted")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100, help="given candidates per request (cand workload)")
    parser.add_argument("--candidate-pool", type=int, default=2000, help="the server's --candidate-pool")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--max-batch", type=int, default=32, help="the server's --max-batch (1: no batching)")
    parser.add_argument("--workloads", nargs="*", help="pool and/or candN (default both)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--from-json", nargs="+", help="print the table of rows saved by earlier --json runs")
    parser.add_argument("--readme", type=Path, help="Markdown file whose --marker block the table replaces")
    parser.add_argument("--marker", default="serve-results")
    args = parser.parse_args()
    if args.from_json:
        rows = [row for path in args.from_json for row in json.loads(Path(path).read_text())]
    else:
        if not args.run:
            parser.error("give --run RUN (this script trains nothing); train one first, e.g.\n"
                         "  python -m newsrank train --model nrms --data ../shared/data/mlsmall_mind --out runs/nrms_ml "
                         "--epochs 1 --set embeddings=glove-6b-50d --set threads=1")
        context = {"command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:]), "commit": commit(),
                   "machine": machine(), "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                   "max_batch": args.max_batch}
        rows = [row | context for run in args.run for row in bench_run(args, run)]
        print(f"\n{args.requests} requests per row at concurrency {args.concurrency} (+{args.warmup} warm-up), "
              f"server --threads {args.threads} --max-batch {args.max_batch}; client and server on the same machine\n")
    text = table(rows)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.readme:
        write_block(args.readme, args.marker, text)


if __name__ == "__main__":
    main()
