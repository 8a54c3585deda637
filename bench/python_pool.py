# SPDX-License-Identifier: MIT
"""The Python peer of bench/offload_bench: asyncio + concurrent.futures.ProcessPoolExecutor,
driven through loop.run_in_executor as an asyncio program would offload CPU work.

Measures
  round trip   one empty job awaited at a time (median, after warm-up)
  throughput   N empty jobs submitted at once and gathered (jobs/s)
  64 MiB       a bytes object sent to a worker and returned (median)

Run:  python3 bench/python_pool.py --out bench/python_pool_result.txt   (~30 s)
      python3 bench/python_pool.py --quick --out /tmp/py.txt           (~10 s)
offload_bench's summary reads the --out file (`key value` lines: round_trip_us, jobs_per_s,
payload_64m_ms) from bench/python_pool_result.txt, or from $TANDEM_PYTHON_RESULT.
"""

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import sys
import time

WORKERS = 2  # as offload_bench's pipe_pool


def empty():
    return None


def echo(data):
    return data


async def round_trip_us(loop, pool, warmup, n):
    for _ in range(warmup):
        await loop.run_in_executor(pool, empty)
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        await loop.run_in_executor(pool, empty)
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1e3


async def jobs_per_s(loop, pool, n):
    t = time.perf_counter()
    await asyncio.gather(*(loop.run_in_executor(pool, empty) for _ in range(n)))
    return n / (time.perf_counter() - t)


async def payload_ms(loop, pool, nbytes, n):
    data = os.urandom(nbytes)
    await loop.run_in_executor(pool, echo, data)  # warm-up: pages and pipe buffers
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        back = await loop.run_in_executor(pool, echo, data)
        samples.append(time.perf_counter() - t)
        if back != data:
            raise RuntimeError("the worker returned different bytes")
    return statistics.median(samples) * 1e3


async def main(args):
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS) as pool:
        # Start every worker before timing anything (the pool forks them on demand).
        await asyncio.gather(*(loop.run_in_executor(pool, empty) for _ in range(4 * WORKERS)))
        rt = await round_trip_us(loop, pool, 200 if args.quick else 500,
                                 500 if args.quick else 3000)
        n_jobs = 20_000 if args.quick else 200_000  # as throughput_200k
        tp = await jobs_per_s(loop, pool, n_jobs)
        p64 = await payload_ms(loop, pool, 64 << 20, 2 if args.quick else 5)
    return {"round_trip_us": rt, "jobs_per_s": tp, "payload_64m_ms": p64}, n_jobs


def cli():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run (~10 s)")
    ap.add_argument("--out", help="write `key value` lines here for offload_bench's summary")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r, n_jobs = asyncio.run(main(args))
    print(f"Python {sys.version.split()[0]}, asyncio + ProcessPoolExecutor({WORKERS} workers)")
    print(f"  {'round trip (median)':<28} {r['round_trip_us']:10.1f} us")
    print(f"  {f'throughput ({n_jobs} in flight)':<28} {r['jobs_per_s']:10.0f} jobs/s")
    print(f"  {'64 MiB round trip (median)':<28} {r['payload_64m_ms']:10.1f} ms"
          f"   ({(64 << 20) / r['payload_64m_ms'] / 1e6:.2f} GB/s)")
    print(f"  (took {time.perf_counter() - t0:.1f} s)")
    if args.out:
        with open(args.out, "w") as f:
            for k, v in r.items():
                f.write(f"{k} {v:.6g}\n")


if __name__ == "__main__":
    cli()
