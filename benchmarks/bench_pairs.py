"""Swap quality on the 72 ordered different-person pairs of ../shared/faces, judged independently.

Prints the second recogniser's pass rate (MobileFaceNet), dlib's, both again against held-out photos of
each identity (its other photos, never seen by the engine), the median sharpness ratio and the foreign-hair
count for the default mesh engine with and without the face parser (and the landmark engine for comparison),
and writes the 10 worst pairs by grader margin to outputs/bench/worst_pairs_*.png and the 12 worst by held-out
figures to outputs/bench/worst_pairs_heldout_*.png.
Run: .venv/bin/python benchmarks/bench_pairs.py [--models DIR]   (DIR: a folder of model files to import)
The photos come from $PORTRAITFORGE_FACES (default ../shared/faces), the models from --models, else
$PORTRAITFORGE_SHARED_MODELS (default ../shared/models): tests/shared_data.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared-data folders, as the tests find them
from shared_data import faces_folder, models_folder  # noqa: E402

from portraitforge.config import RefineConfig  # noqa: E402
from portraitforge.evaluation import Judge, PairFigures, contact_sheet, evaluate_pairs, heldout_agreement  # noqa: E402
from portraitforge.imageio import save_image  # noqa: E402
from portraitforge.models.face_parsing import FaceParser  # noqa: E402
from portraitforge.models.mobilefacenet import MobileFaceNet  # noqa: E402
from portraitforge.models.store import ModelStore, default_models_dir  # noqa: E402
from portraitforge.pipelines.refine import RefinePipeline  # noqa: E402
from portraitforge.refiners.detect import DlibFaceAnalyzer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--models", type=Path, default=models_folder().path)
    args.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    args.add_argument("--configs", default="mesh,mesh-noparse,landmark")
    args.add_argument("--swapper", default="{}", help="JSON of mesh-swapper fields to override (experiments)")
    args.add_argument("--detail", default="{}", help="JSON of detail-stage fields to override (experiments)")
    opts = args.parse_args()
    faces = faces_folder()
    if not faces.available or not opts.models.is_dir():
        print(f"needs the labelled photos ({faces.missing_reason}) and {opts.models}", file=sys.stderr)
        return 1
    faces_dir = faces.path
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
    for person, (cos, distance) in heldout_agreement(judge, faces_dir).items():
        print(f"  identity photo vs held-out photos, {person}: grader {cos:.2f}, dlib {distance:.2f}")
    for name in opts.configs.split(","):
        pipe = RefinePipeline.from_config(configs[name], model_store=store)
        overrides = json.loads(opts.swapper)
        if overrides and name.startswith("mesh"):
            pipe.swapper = dataclasses.replace(pipe.swapper, **overrides)  # type: ignore[type-var]
        detail_overrides = json.loads(opts.detail)
        if detail_overrides and pipe.detail is not None:
            pipe.detail = dataclasses.replace(pipe.detail, **detail_overrides)
        start = time.perf_counter()
        figures = PairFigures(list(evaluate_pairs(pipe, faces_dir, judge)))
        summary = figures.summary() | {"config": name, "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(summary))
        for pair in figures.pairs:
            if not (pair.grader_pass and pair.dlib_pass):
                print(
                    f"  fail {pair.target} <- {pair.identity}: grader {pair.grader_identity:.2f} "
                    f"(orig {pair.grader_original:.2f}) dlib {pair.dlib_identity:.2f} (orig {pair.dlib_original:.2f})"
                )
        for pair in figures.pairs:
            if not (pair.grader_heldout_pass and pair.dlib_heldout_pass):
                print(
                    f"  held-out fail {pair.target} <- {pair.identity}: grader {pair.grader_heldout:.2f} "
                    f"(orig {pair.grader_original:.2f}) dlib {pair.dlib_heldout:.2f} (orig {pair.dlib_original:.2f})"
                )
        for pair in figures.hair_failures:
            print(f"  foreign hair {pair.foreign_hair:.4f}: {pair.target} <- {pair.identity}")
        sheet = opts.out / f"worst_pairs_{name}.png"
        save_image(sheet, contact_sheet(figures.worst(10), faces_dir))
        print(f"  worst 10 by grader margin: {sheet}")
        heldout_sheet = opts.out / f"worst_pairs_heldout_{name}.png"
        save_image(heldout_sheet, contact_sheet(figures.worst_heldout(12), faces_dir))
        print(f"  worst 12 by held-out figures: {heldout_sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
