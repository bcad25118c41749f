"""Bounded loopback load test of the Gradio demo (not part of the test suite).

Starts the demo on 127.0.0.1 (a random free port) with one model folder / Hub id, or a tiny
random model built from the test fixture tokenizer, or, with `--serve MODELS...`, runs the
`automoe serve MODELS...` command itself as a child process (what a user starts; folders that are
not models, such as a supernet, are skipped by it with a note). Then sends N `/translate` requests
through gradio_client from C concurrent clients, within `--max-seconds`. Prints one JSON record
and appends it to benchmarks/results/load_demo.jsonl: client-side latency p50/p90/p95/max, the
server-measured translation ms, errors, throughput, model, engine, beam, app concurrency limit,
CPU and git commit.

    python benchmarks/load_demo.py                          # tiny random model, 100 requests, 8 concurrent
    python benchmarks/load_demo.py --model models/automoe-bible --data data/bible-en-de --engine torch
    python benchmarks/load_demo.py --serve models/* --data data/bible-en-de   # the shipped models, via the CLI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, git_commit, percentile  # noqa: E402
FIXTURE = ROOT / "tests" / "data" / "bible-en-de"
MAX_REQUESTS, MAX_CONCURRENCY = 10_000, 64


def tiny_random_model(folder: Path) -> Path:
    """A tiny heterogeneous-MoE model with random weights and the fixture tokenizer (vocab 1000)."""
    from automoe.config import SearchSpace
    from automoe.random_model import save_random_model

    arch = SearchSpace.preset("tiny").largest().replace(
        vocab_size=1000, max_positions=64, encoder_ffn=((40, 8), (24,), (8, 40, 24)),
        decoder_ffn=((24, 8), (40,), (8, 40)))
    return save_random_model(arch, folder, tokenizer_file=FIXTURE / "spm.model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`automoe serve MODELS... --port PORT` as a child process on 127.0.0.1, stopped (by its own
    process id) on exit; its log goes to a temporary file, read back for the record."""

    def __init__(self, models: list[str], port: int, args: argparse.Namespace):
        exe = shutil.which("automoe")
        cmd = [exe] if exe else [sys.executable, "-m", "automoe"]
        cmd += ["serve", *models, "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads),
                "--concurrency", str(args.app_concurrency)]
        if args.data:
            cmd += ["--data", args.data]
        self.log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.command = " ".join(["automoe", *cmd[cmd.index("serve"):]])

    def wait_ready(self, url: str, timeout: float) -> None:
        """Poll the server until it answers; a child that exits or a timeout is an error with its log."""
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"automoe serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except OSError:
                time.sleep(1)
        raise SystemExit(f"automoe serve did not answer within {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run(args: argparse.Namespace) -> dict:
    import gradio
    from gradio_client import Client

    from automoe.checkpoint import folder_kind
    from automoe.serve.app import build_app
    from automoe.serve.demo import load_examples

    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise SystemExit(f"--requests must be 1..{MAX_REQUESTS} and --concurrency 1..{MAX_CONCURRENCY}")
    tmp = tempfile.TemporaryDirectory(prefix="load_demo-")
    sentences = load_examples(args.data or FIXTURE, n=args.sentences, max_chars=args.max_chars)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = demo = None
    if args.serve:
        served = [m for m in args.serve if folder_kind(m) in ("model", "export")]
        if not served:
            raise SystemExit(f"none of {args.serve} is a model or export folder")
        name = Path(args.model or served[0]).name  # the model the requests ask for
        model = str(Path(args.model or served[0]))
        server = ServeProcess(args.serve, port, args)
    else:
        model = args.model or str(tiny_random_model(Path(tmp.name) / "tiny-random-moe"))
        name = ("tiny-random-moe" if not args.model else Path(args.model).name if Path(args.model).exists()
                else args.model)
        demo = build_app({name: model}, data_dir=args.data, engines=(args.engine,), threads=args.threads,
                         concurrency_limit=args.app_concurrency, max_queue=max(64, args.concurrency * 2))
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    local = threading.local()
    latencies, server_ms, errors = [], [], []
    lock = threading.Lock()

    deadline = float("inf")  # set when the timed requests start

    def one(i: int) -> None:
        if time.monotonic() > deadline:  # bounded in time: what is left counts as errors, never waits
            with lock:
                errors.append(f"request {i}: not sent, --max-seconds {args.max_seconds:g} reached")
            return
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False)
        sentence = sentences[i % len(sentences)]
        start = time.perf_counter()
        try:
            job = local.client.submit(sentence, name, args.engine, args.beam, api_name="/translate")
            german, ms, status = job.result(timeout=args.request_timeout)
            if ms is None or not german:
                raise RuntimeError(f"no translation: {german!r}")
        except Exception as e:  # counted, reported, never retried
            with lock:
                errors.append(f"request {i}: {type(e).__name__}: {e}"[:300])
            return
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            latencies.append(elapsed)
            server_ms.append(float(ms))

    try:
        if server is not None:
            server.wait_ready(url, args.start_timeout)
        # warm-up (not counted): one request per client thread
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda i: Client(url, verbose=False).predict(
                sentences[0], name, args.engine, args.beam, api_name="/translate"), range(min(2, args.concurrency))))
        wall = time.perf_counter()
        deadline = time.monotonic() + args.max_seconds
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="load") as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - wall
    finally:
        if demo is not None:
            demo.close()
        log = ""
        if server is not None:
            server.stop()
            log = server.output()
        tmp.cleanup()

    import torch

    return {
        "benchmark": "load_demo", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": name,
        "model_source": ("tiny random weights (fixture tokenizer)" if not (args.model or args.serve) else model),
        "server": server.command if server else "in-process build_app", "served": args.serve or [model],
        "skipped_by_server": [line.split("skipping ", 1)[1].split(":", 1)[0] for line in log.splitlines()
                              if "skipping " in line],
        "engine": args.engine, "beam": args.beam, "requests": args.requests, "concurrency": args.concurrency,
        "app_concurrency_limit": args.app_concurrency, "threads": args.threads or torch.get_num_threads(),
        "ok": len(latencies), "errors": len(errors), "error_samples": errors[:5],
        "latency_ms_p50": round(percentile(latencies, 50), 1), "latency_ms_p90": round(percentile(latencies, 90), 1),
        "latency_ms_p95": round(percentile(latencies, 95), 1),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "latency_ms_mean": round(statistics.fmean(latencies), 1) if latencies else None,
        "server_ms_p50": round(percentile(server_ms, 50), 1), "server_ms_p90": round(percentile(server_ms, 90), 1),
        "server_ms_p95": round(percentile(server_ms, 95), 1), "max_seconds": args.max_seconds,
        "throughput_rps": round(len(latencies) / wall, 2), "wall_s": round(wall, 2),
        "sentences": len(sentences), "cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "gradio": gradio.__version__, "torch": torch.__version__, "git_commit": git_commit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or Hub id (default: a tiny random MoE model; with "
                                                 "--serve: the model the requests ask for, default the first served)")
    p.add_argument("--serve", nargs="+", default=None, metavar="MODEL",
                   help="run `automoe serve MODEL...` as a child process and load-test it (e.g. models/*)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="time bound of the timed requests")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for `automoe serve` to answer")
    p.add_argument("--data", default=None, help="dataset folder: requests cycle through its test sentences")
    p.add_argument("--engine", default="torch")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    p.add_argument("--app-concurrency", type=int, default=2, help="the app queue's concurrency limit")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per request in the app")
    p.add_argument("--sentences", type=int, default=20, help="distinct sentences to cycle through")
    p.add_argument("--max-chars", type=int, default=100, help="only test sentences up to this many characters")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds before a request counts as an error")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "load_demo.jsonl"))
    args = p.parse_args(argv)
    record = run(args)
    line = json.dumps(record)
    print(line)
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0 if record["errors"] == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
