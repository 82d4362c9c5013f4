"""Median cost of one dlib 128-d face descriptor: dlib-bin's own network vs the torch port.

    .venv/bin/python benchmarks/bench_descriptor.py [--repeats 15] [--batch 8] [--threads 1 2]

Both paths include dlib's chip alignment (get_face_chip). "single" = one face per call (what a refine
does twice); "batched" = `--batch` faces per call, reported per descriptor. Prints wall-clock medians,
this process's CPU time per descriptor and the load average: on a shared machine other processes
inflate wall time, and multi-threaded runs suffer most from that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from portraitforge.models.dlib_models import DlibModels
from portraitforge.models.dlib_resnet_torch import TorchDescriptorBackend, dlib_shape
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.samples import astronaut


def measure(fn: Callable[[], object], repeats: int, per_call: int) -> tuple[float, float]:
    """(median wall ms, median process CPU ms) per descriptor, after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - w0) * 1000 / per_call)
        cpus.append((time.process_time() - c0) * 1000 / per_call)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import dlib

    models = DlibModels.load(descriptor_backend="torch")
    assert models.descriptor_torch is not None
    image = astronaut()
    face = DlibFaceAnalyzer(models=models).detect(image)[0]
    assert face.landmarks68 is not None
    shape = dlib_shape(face.landmarks68, face.box)
    shapes = dlib.full_object_detections()
    for _ in range(args.batch):
        shapes.append(shape)
    batch = [(face.landmarks68, face.box)] * args.batch

    print(f"cpus={os.cpu_count()} load_avg={os.getloadavg()[0]:.2f} torch={torch.__version__}")
    print(f"{'backend':<8} {'threads':>7} {'mode':<12} {'wall ms/desc':>12} {'cpu ms/desc':>11}")
    dlib_single = measure(lambda: models.descriptor.compute_face_descriptor(image, shape, 0), args.repeats, 1)
    dlib_batch = measure(
        lambda: models.descriptor.compute_face_descriptor(image, shapes, 0), max(3, args.repeats // 3), args.batch
    )
    for mode, (wall, cpu) in (("single", dlib_single), (f"batched x{args.batch}", dlib_batch)):
        print(f"{'dlib':<8} {'own':>7} {mode:<12} {wall:12.1f} {cpu:11.1f}")
    for threads in args.threads:
        backend = TorchDescriptorBackend(net=models.descriptor_torch.net, num_threads=threads)
        single = measure(partial(backend.compute, image, face.landmarks68, face.box), args.repeats, 1)
        batched = measure(partial(backend.compute_batch, image, batch), args.repeats, args.batch)
        for mode, (wall, cpu), ref in (
            ("single", single, dlib_single),
            (f"batched x{args.batch}", batched, dlib_batch),
        ):
            print(
                f"{'torch':<8} {threads:>7} {mode:<12} {wall:12.1f} {cpu:11.1f}   dlib/torch wall {ref[0] / wall:5.1f}x"
            )
    chip_ms = measure(lambda: dlib.get_face_chip(image, shape, size=150, padding=0.25), args.repeats, 1)[0]
    print(f"(chip alignment alone: {chip_ms:.2f} ms; descriptors agree to {models.descriptor_torch.verified})")


if __name__ == "__main__":
    main()
