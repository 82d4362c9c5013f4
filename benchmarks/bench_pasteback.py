"""Paste-back cost: our crop-local paste-back against insightface's full-frame one, at 512, 1024 and 2048 px.

insightface's `INSwapper.get(paste_back=True)` warps the swapped face, a white mask and a diff mask over the
whole frame and blends the whole frame, so its cost grows with the frame. Ours warps the 128 px result into
the face ROI only (`FaceBlender`, feather mode = the same alpha blend insightface does).

Both sides use the same synthetic inswapper_128-signature model (tests/onnx_fixtures.py), the same face
(scikit-image's astronaut photo, resized so the face scales with the frame) and the same latent.

    .venv/bin/python benchmarks/bench_pasteback.py [--repeats 15]

Reports medians in ms: insightface get(paste_back=False) (model + preprocessing), get(paste_back=True), their
paste-back alone (the difference), our paste-back alone and our whole swap (InswapperSwapper on the aligned
face crop + FaceBlender). Goal: our paste-back >= 5x faster than theirs at 2048.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onnx_fixtures import make_inswapper  # noqa: E402
from timing import median_ms

from portraitforge.models.onnx_runtime import OnnxSessionPool, OnnxSettings  # noqa: E402
from portraitforge.refiners.align import align_face, native_crop_size, transform_points  # noqa: E402
from portraitforge.refiners.blend import FaceBlender  # noqa: E402
from portraitforge.refiners.detect import DlibFaceAnalyzer  # noqa: E402
from portraitforge.refiners.detect_insightface import ARCFACE_SPACE, norm_crop  # noqa: E402
from portraitforge.refiners.swap_inswapper import InswapperModel, InswapperSwapper, aligned_mask  # noqa: E402
from portraitforge.types import Face, Identity  # noqa: E402


def bench_size(
    frame: np.ndarray,
    face: Face,
    theirs: Any,
    ours_model: InswapperModel,
    swapper: InswapperSwapper,
    blender: FaceBlender,
    identity: Identity,
    emb: np.ndarray,
    repeats: int,
) -> dict[str, float]:
    from insightface.app.common import Face as IFace

    bgr = np.ascontiguousarray(frame[..., ::-1])
    target, source = IFace(kps=face.kps5), IFace(embedding=emb)
    t: dict[str, float] = {}
    t["model"] = median_ms(lambda: theirs.get(bgr, target, source, paste_back=False), repeats)
    t["full"] = median_ms(lambda: theirs.get(bgr, target, source, paste_back=True), repeats)
    t["their_paste"] = max(t["full"] - t["model"], 1e-3)

    aligned, m = norm_crop(frame, face.kps5, 128)
    swapped = np.clip(np.rint(ours_model.run(aligned, ours_model.latent(emb)) * 255), 0, 255).astype(np.uint8)
    inverse = cv2.invertAffineTransform(m)
    mask128 = aligned_mask(128)
    t["our_paste"] = median_ms(lambda: blender(frame, swapped, mask128, inverse), repeats)

    crop_size = native_crop_size(face.kps5, 0.45, maximum=512)

    def our_swap() -> None:
        crop = align_face(frame, face.kps5, crop_size, 0.45)
        in_crop = replace(face, kps5=transform_points(face.kps5, crop.matrix), landmarks68=None)
        out = swapper(crop, in_crop, identity, 1.0)
        blender(frame, out.image, out.mask, crop.inverse)

    t["our_swap"] = median_ms(our_swap, repeats)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)  # insightface's skimage estimate

    from insightface.model_zoo.inswapper import INSwapper

    tmp = Path(tempfile.mkdtemp())
    model_path = make_inswapper(tmp / "inswapper_128.onnx")
    pool = OnnxSessionPool(OnnxSettings(intra_op_threads=2))
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        theirs = INSwapper(model_file=str(model_path), session=pool.get(model_path))
    ours_model = InswapperModel.from_file(model_path, pool)
    swapper = InswapperSwapper(model=ours_model)
    blender = FaceBlender("feather")

    base = np.ascontiguousarray(skimage.data.astronaut())
    face0 = DlibFaceAnalyzer.load().detect(base)[0]
    emb = np.random.default_rng(0).normal(size=512).astype(np.float32)
    emb /= np.linalg.norm(emb)
    identity = Identity("bench", {ARCFACE_SPACE: emb}, np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2), np.float32))

    header = ("size", "if model", "if get+paste", "if paste", "our paste", "our swap", "ratio")
    widths = (6, 9, 13, 9, 10, 9, 7)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for size in (512, 1024, 2048):
        frame = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
        face = replace(face0, kps5=face0.kps5 * (size / base.shape[0]))
        t = bench_size(frame, face, theirs, ours_model, swapper, blender, identity, emb, args.repeats)
        ratio = t["their_paste"] / t["our_paste"]
        print(
            f"{size:>6} {t['model']:>9.2f} {t['full']:>13.2f} {t['their_paste']:>9.2f} {t['our_paste']:>10.2f} "
            f"{t['our_swap']:>9.2f} {ratio:>6.1f}x"
        )
    print("ms medians; ratio = insightface paste-back / our paste-back (goal >= 5x at 2048)")
    print("'our swap' = align crop + boosted inswapper + crop-local paste (includes model runs)")


if __name__ == "__main__":
    main()
