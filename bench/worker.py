"""One measurement in a fresh process: `python -m bfnas.bench.worker --model PATH ...`.

Prints one JSON object on stdout. Running each measurement in its own process keeps one
subnet's allocator state, thread pools or crash away from the next one's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bfnas.bench.ort_harness import SessionSpec, make_session, time_session, token_feed
from bfnas.bench.stats import summarize


def measure(model: str, threads: int, batch: int, seq_len: int, warmup: int, runs: int) -> dict:
    spec = SessionSpec(intra_op_threads=threads)
    t = time.perf_counter()
    session = make_session(model, spec)
    session_ms = (time.perf_counter() - t) * 1e3
    first, samples = time_session(session, token_feed(batch, seq_len), warmup, runs)
    return {
        **summarize(samples),
        "first_ms": first,
        "session_ms": session_ms,
        "samples_ms": samples,
        "provider": session.get_providers()[0],
        "threads": threads,
        "batch": batch,
        "seq_len": seq_len,
        "pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bfnas.bench.worker", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=int, default=100)
    a = p.parse_args(argv)
    try:
        result = measure(a.model, a.threads, a.batch, a.seq_len, a.warmup, a.runs)
    except Exception as exc:  # reported to the parent as data, never as a traceback
        print(json.dumps({"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"status": "ok", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
