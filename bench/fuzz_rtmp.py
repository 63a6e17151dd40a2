"""Fuzz the RTMP parsers at length: python bench/fuzz_rtmp.py [--cases N] [--seed S].

Runs the targets of tests/media_server/test_rtmp_fuzz.py (chunk reader, AMF0, FLV tags and
codec records, handshake, the ingest state machine) on N mutated/random inputs each, then
a hypothesis pass on raw bytes, and prints a table. Only each module's own error may come
out; anything else is a bug and stops the run with its input.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.media_server.test_rtmp_fuzz import SEEDS, TARGETS, mutate


def run_mutations(name: str, cases: int, seed: int) -> tuple[int, float]:
    rng = random.Random(seed)
    target, pool = TARGETS[name], SEEDS[name]
    start = time.perf_counter()
    for i in range(cases):
        data = (
            rng.randbytes(rng.randint(0, 64))
            if i % 10 == 0
            else mutate(rng, rng.choice(pool), pool)
        )
        try:
            target(data)
        except Exception:
            print(f"\n{name}: unexpected error for input {data.hex()}", file=sys.stderr)
            traceback.print_exc()
            raise SystemExit(1) from None
    return cases, time.perf_counter() - start


def run_hypothesis(name: str, examples: int) -> int:
    count = 0

    @settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.binary(max_size=800))
    def check(data: bytes) -> None:
        nonlocal count
        count += 1
        TARGETS[name](data)

    check()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=25_000, help="mutated inputs per target")
    parser.add_argument("--hypothesis", type=int, default=2_000, help="examples per target")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the ingest warns about every bad audio tag it drops
    print(f"seed {args.seed}")
    print(f"{'target':<10} {'mutated':>9} {'hypothesis':>11} {'seconds':>8} {'cases/s':>8}")
    total = 0
    for name in TARGETS:
        cases, seconds = run_mutations(name, args.cases, args.seed)
        start = time.perf_counter()
        examples = run_hypothesis(name, args.hypothesis)
        seconds += time.perf_counter() - start
        total += cases + examples
        print(
            f"{name:<10} {cases:>9} {examples:>11} {seconds:>8.1f} "
            f"{(cases + examples) / seconds:>8.0f}"
        )
    print(f"total {total} cases, no unexpected error")


if __name__ == "__main__":
    main()
