"""Swap quality on the 72 ordered different-person pairs of ../shared/faces, judged independently.

Prints the second recogniser's pass rate (MobileFaceNet), dlib's, the median sharpness ratio and the
foreign-hair count for the default mesh engine with and without the face parser (and the landmark engine
for comparison), and writes the 10 worst pairs by grader margin to outputs/bench/worst_pairs_*.png.
Run: .venv/bin/python benchmarks/bench_pairs.py [--models DIR]   (DIR: a folder of model files to import)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from portraitforge.config import RefineConfig
from portraitforge.evaluation import Judge, PairFigures, contact_sheet, evaluate_pairs
from portraitforge.imageio import save_image
from portraitforge.models.face_parsing import FaceParser
from portraitforge.models.mobilefacenet import MobileFaceNet
from portraitforge.models.store import ModelStore, default_models_dir
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--models", type=Path, default=SHARED / "models")
    args.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    args.add_argument("--configs", default="mesh,mesh-noparse,landmark")
    args.add_argument("--swapper", default="{}", help="JSON of mesh-swapper fields to override (experiments)")
    args.add_argument("--detail", default="{}", help="JSON of detail-stage fields to override (experiments)")
    opts = args.parse_args()
    faces = SHARED / "faces"
    if not (faces / "identities.csv").is_file() or not opts.models.is_dir():
        print(f"needs {faces} and {opts.models}", file=sys.stderr)
        return 1
    store = ModelStore.from_dir(tempfile.mkdtemp(prefix="bench-models-"))
    store.import_dir(opts.models)
    store.import_dir(default_models_dir())  # face_mesh_connections.py comes from `models setup`
    judge = Judge(
        dlib=DlibFaceAnalyzer.load(),
        grader=MobileFaceNet.load(store.ensure("mobilefacenet", download=False)),
        parser=FaceParser.load(store.ensure("bisenetv2_face_parsing", download=False)),
    )
    configs = {
        "mesh": RefineConfig(),
        "mesh-noparse": RefineConfig(parsing="off"),
        "landmark": RefineConfig(swap_engine="landmark"),
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    for name in opts.configs.split(","):
        pipe = RefinePipeline.from_config(configs[name], model_store=store)
        overrides = json.loads(opts.swapper)
        if overrides and name.startswith("mesh"):
            pipe.swapper = dataclasses.replace(pipe.swapper, **overrides)  # type: ignore[type-var]
        detail_overrides = json.loads(opts.detail)
        if detail_overrides and pipe.detail is not None:
            pipe.detail = dataclasses.replace(pipe.detail, **detail_overrides)
        start = time.perf_counter()
        figures = PairFigures(list(evaluate_pairs(pipe, faces, judge)))
        summary = figures.summary() | {"config": name, "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(summary))
        for pair in figures.pairs:
            if not (pair.grader_pass and pair.dlib_pass):
                print(
                    f"  fail {pair.target} <- {pair.identity}: grader {pair.grader_identity:.2f} "
                    f"(orig {pair.grader_original:.2f}) dlib {pair.dlib_identity:.2f} (orig {pair.dlib_original:.2f})"
                )
        for pair in figures.hair_failures:
            print(f"  foreign hair {pair.foreign_hair:.4f}: {pair.target} <- {pair.identity}")
        sheet = opts.out / f"worst_pairs_{name}.png"
        save_image(sheet, contact_sheet(figures.worst(10), faces))
        print(f"  worst 10 by grader margin: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
