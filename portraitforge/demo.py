"""The offline demo: real photos from the installed wheels, the embedded dlib models, no network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from portraitforge.config import RefineConfig
from portraitforge.errors import NoFaceError
from portraitforge.imageio import load_image, save_image
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.samples import astronaut, insightface_image
from portraitforge.types import ImageRGB, RefineReport

SWEEP_STRENGTHS = (0.3, 0.5, 0.7, 0.9)
# The frontal, smiling face in insightface's t1.jpg, found by position (fraction of width, height): reading-order
# indices change with how many faces a detector finds.
IDENTITY_FACE_AT = (0.42, 0.36)


@dataclass
class DemoOutput:
    folder: Path
    files: list[Path]
    report: RefineReport


def labelled(image: ImageRGB, text: str, height: int = 384) -> ImageRGB:
    scale = height / image.shape[0]
    tile = cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    bar = np.full((36, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (8, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 20), 2, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def identity_photo(analyzer: FaceAnalyzer) -> ImageRGB:
    """A loose crop around one face of t1.jpg, so the identity photo shows exactly one person."""
    group = load_image(insightface_image("t1.jpg")).rgb
    faces = analyzer.detect(group)
    if not faces:
        raise NoFaceError("demo: no face found in insightface's t1.jpg")
    at = np.array([IDENTITY_FACE_AT[0] * group.shape[1], IDENTITY_FACE_AT[1] * group.shape[0]])
    face = min(faces, key=lambda f: float(np.linalg.norm(np.array(f.center) - at)))
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    top, bottom = int(max(0, y0 - 0.8 * h)), int(min(group.shape[0], y1 + 0.6 * h))
    left, right = int(max(0, x0 - 0.6 * w)), int(min(group.shape[1], x1 + 0.6 * w))
    return np.ascontiguousarray(group[top:bottom, left:right])


def run_demo(folder: Path, pipe: RefinePipeline | None = None) -> DemoOutput:
    folder.mkdir(parents=True, exist_ok=True)
    pipe = pipe or RefinePipeline.from_config()
    target = astronaut()
    # The frontal, neutral portrait shipped with insightface: the faces of t1.jpg look down, squint or turn away,
    # and an identity photo like that shows in every swap made from it.
    id_image = load_image(insightface_image("Tom_Hanks_54745.png")).rgb
    identity = pipe.identity_from_image(id_image, "tom-hanks", source="insightface Tom_Hanks_54745.png")

    result = pipe(target, identity)
    if result.image is None:
        raise NoFaceError(f"demo: {result.report.message}")
    files = [
        save_image(folder / "target.png", target),
        save_image(folder / "identity.png", id_image),
        save_image(folder / "result.png", result.image, metadata={"parameters": pipe.params()}),
    ]
    sheet = np.concatenate(
        [labelled(target, "target"), labelled(id_image, "identity"), labelled(result.image, "result")], axis=1
    )
    files.append(save_image(folder / "comparison.png", sheet))

    tiles = []
    for strength in SWEEP_STRENGTHS:
        swept = pipe.with_config(pipe.config.model_copy(update={"strength": strength}))(target, identity)
        if swept.image is None:
            raise NoFaceError(f"demo: strength {strength}: {swept.report.message}")
        tiles.append(labelled(swept.image, f"strength {strength}", height=320))
    files.append(save_image(folder / "strength_sweep.png", np.concatenate(tiles, axis=1)))

    group = load_image(insightface_image("t1.jpg")).rgb
    # Full-resolution detection: HOG misses t1.jpg's two smallest faces on the default 640 px copy.
    group_cfg = RefineConfig(**{**pipe.config.model_dump(), "select": "all", "detect_max_side": 1280})
    all_faces = pipe.with_config(group_cfg)(group, identity)
    if all_faces.image is not None:
        files.append(save_image(folder / "group_all_faces.png", all_faces.image))

    report_path = folder / "report.json"
    report_path.write_text(json.dumps(result.report.to_dict(), indent=2))
    files.append(report_path)
    return DemoOutput(folder=folder, files=files, report=result.report)
