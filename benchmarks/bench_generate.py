"""PortraitPipeline's overhead over the bare diffusers call, on a tiny random SD model (goal: ratio <= 1.05).

    .venv/bin/python benchmarks/bench_generate.py [--repeats 15] [--size 128] [--steps 10] [--threads 1]

"bare" is what a diffusers user writes: `pipe(prompt, generator=torch.Generator("cpu").manual_seed(s), ...)`
returning a PIL image. "portrait" is `PortraitPipeline(prompt, seed=s, ...)` without identity: the same call plus
parameter validation, our CPU generator, uint8 conversion and metadata records. "portrait+progress" adds a
step callback (what the CLI's bar costs). Calls are interleaved so that load on a shared machine hits all
variants alike; medians of wall time and of this process's CPU time are printed, with the load average.
The tiny model comes from tests/diffusion_fixtures.py (built in a temp folder, nothing downloaded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusion_fixtures import save_tiny  # noqa: E402

from portraitforge.pipelines.portrait import PortraitPipeline, ProgressEvent  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny(Path(tmp), "sd")
        ours = PortraitPipeline.from_pretrained(folder, device="cpu")
        bare = ours.model.pipe  # the very same loaded diffusers pipeline: only the wrapper differs
        prompt, size, steps = "studio portrait photo of a woman", args.size, args.steps

        def run_bare(seed: int) -> object:
            generator = torch.Generator("cpu").manual_seed(seed)
            return bare(
                prompt, num_inference_steps=steps, guidance_scale=7.5, width=size, height=size, generator=generator
            ).images[0]

        def run_ours(seed: int) -> object:
            return ours(prompt, seed=seed, steps=steps, guidance=7.5, width=size, height=size).images[0]

        def progress(event: ProgressEvent) -> None:
            pass

        def run_ours_progress(seed: int) -> object:
            return ours(prompt, seed=seed, steps=steps, guidance=7.5, width=size, height=size, callback=progress)

        variants: dict[str, Callable[[int], object]] = {
            "bare": run_bare,
            "portrait": run_ours,
            "portrait+progress": run_ours_progress,
        }
        # Same pixels: the wrapper must not change what diffusers draws.
        assert np.array_equal(np.asarray(run_bare(1)), run_ours(1))
        walls: dict[str, list[float]] = {k: [] for k in variants}
        cpus: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(args.repeats):
            for name, fn in variants.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn(i)
                walls[name].append((time.perf_counter() - w0) * 1e3)
                cpus[name].append((time.process_time() - c0) * 1e3)

    print(f"tiny SD, {size}x{size}, {steps} steps, {args.threads} thread(s), {args.repeats} repeats")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base_wall, base_cpu = statistics.median(walls["bare"]), statistics.median(cpus["bare"])
    for name in variants:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(
            f"{name:>18}: median wall {wall:8.1f} ms  (ratio {wall / base_wall:.3f})   "
            f"median cpu {cpu:8.1f} ms  (ratio {cpu / base_cpu:.3f})"
        )
    ratio = statistics.median(cpus["portrait"]) / base_cpu
    print(
        f"overhead ratio (portrait / bare, CPU time): {ratio:.3f}  goal <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
