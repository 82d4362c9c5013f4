"""Judging swaps on labelled photos with models the engine does not use for the judgement itself.

For every ordered pair of different people (target <- identity) this measures:
- the second recogniser (MobileFaceNet): cos(result, identity photo) >= 0.45 and above cos(result, original);
- dlib's descriptor: distance(result, identity photo) < 0.6 and below distance(result, original);
- both again against the identity's held-out photos (every labelled photo of that person except the one the
  identity was built from, as the mean of their embeddings), with the same rule. The identity photo's own
  embedding flatters the swap: its pixels were warped into the result, so the result shares its pose, light
  and expression. Held-out photos ask whether the result shows the *person*;
- sharpness: Laplacian variance of result / target inside the target's inner face (dlib's 68-point hull,
  eroded), so the swap's own mask never decides where sharpness is measured;
- foreign hair: pixels the face parser calls hair in the result where it called the target's skin or
  features, as a share of that face area. Pixels within 2% of the face height of the target's own hair do not
  count: the parser's hair border moves by a few pixels between two photos of the same hairline (seen on a
  shaved temple, where the flagged band was the target's own stubble).
Faces in results are found by dlib's HOG detector and 68 landmarks, independent of the mesh analyzer.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from portraitforge.imageio import load_image
from portraitforge.models.face_parsing import FACE_INTERIOR, FaceClass, FaceParser
from portraitforge.models.mobilefacenet import MobileFaceNet
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.refiners.quality import laplacian_variance
from portraitforge.types import Face, ImageRGB

HAIR_TOLERANCE = 0.005  # share of the target's face area: below this is parser noise along the hairline
GRADER_MIN_SIMILARITY = 0.45
DLIB_MAX_DISTANCE = 0.6


def grader_rule(similarity: float, original: float) -> bool:
    """The second recogniser's pass rule (module docstring): close enough, and closer than the original."""
    return similarity >= GRADER_MIN_SIMILARITY and similarity > original


def dlib_rule(distance: float, original: float) -> bool:
    """dlib's pass rule (module docstring): near enough, and nearer than the original."""
    return distance < DLIB_MAX_DISTANCE and distance < original


@dataclass(frozen=True)
class PairResult:
    target: str
    identity: str
    grader_identity: float
    grader_original: float
    dlib_identity: float
    dlib_original: float
    grader_heldout: float  # cos(result, mean of the identity's other photos)
    dlib_heldout: float  # distance(result, mean descriptor of the identity's other photos)
    sharpness_ratio: float
    foreign_hair: float
    status: str
    image: ImageRGB = field(repr=False, compare=False)

    @property
    def grader_pass(self) -> bool:
        return grader_rule(self.grader_identity, self.grader_original)

    @property
    def dlib_pass(self) -> bool:
        return dlib_rule(self.dlib_identity, self.dlib_original)

    @property
    def grader_heldout_pass(self) -> bool:
        """The grader rule with the held-out photos in place of the identity photo (same original)."""
        return grader_rule(self.grader_heldout, self.grader_original)

    @property
    def dlib_heldout_pass(self) -> bool:
        return dlib_rule(self.dlib_heldout, self.dlib_original)

    @property
    def hair_pass(self) -> bool:
        return self.foreign_hair < HAIR_TOLERANCE


@dataclass
class PairFigures:
    pairs: list[PairResult]

    @property
    def grader_rate(self) -> float:
        return sum(p.grader_pass for p in self.pairs) / len(self.pairs)

    @property
    def dlib_rate(self) -> float:
        return sum(p.dlib_pass for p in self.pairs) / len(self.pairs)

    @property
    def grader_heldout_rate(self) -> float:
        return sum(p.grader_heldout_pass for p in self.pairs) / len(self.pairs)

    @property
    def dlib_heldout_rate(self) -> float:
        return sum(p.dlib_heldout_pass for p in self.pairs) / len(self.pairs)

    @property
    def median_sharpness_ratio(self) -> float:
        return statistics.median(p.sharpness_ratio for p in self.pairs)

    @property
    def hair_failures(self) -> list[PairResult]:
        return [p for p in self.pairs if not p.hair_pass]

    def worst(self, n: int = 10) -> list[PairResult]:
        return sorted(self.pairs, key=lambda p: p.grader_identity - p.grader_original)[:n]

    def worst_heldout(self, n: int = 10) -> list[PairResult]:
        """Held-out failures first (by how many of the two recognisers fail), then by dlib's held-out margin."""
        return sorted(
            self.pairs,
            key=lambda p: (p.grader_heldout_pass + p.dlib_heldout_pass, p.dlib_original - p.dlib_heldout),
        )[:n]

    def summary(self) -> dict[str, Any]:
        return {
            "pairs": len(self.pairs),
            "grader_pass": f"{sum(p.grader_pass for p in self.pairs)}/{len(self.pairs)}",
            "grader_rate": round(self.grader_rate, 4),
            "dlib_pass": f"{sum(p.dlib_pass for p in self.pairs)}/{len(self.pairs)}",
            "dlib_rate": round(self.dlib_rate, 4),
            "grader_heldout_pass": f"{sum(p.grader_heldout_pass for p in self.pairs)}/{len(self.pairs)}",
            "grader_heldout_rate": round(self.grader_heldout_rate, 4),
            "dlib_heldout_pass": f"{sum(p.dlib_heldout_pass for p in self.pairs)}/{len(self.pairs)}",
            "dlib_heldout_rate": round(self.dlib_heldout_rate, 4),
            "median_sharpness_ratio": round(self.median_sharpness_ratio, 3),
            "hair_failures": len(self.hair_failures),
            "max_foreign_hair": round(max(p.foreign_hair for p in self.pairs), 5),
        }


def photos_per_person(faces_dir: Path) -> dict[str, list[Path]]:
    """identity label -> its photos, in identities.csv order."""
    photos: dict[str, list[Path]] = {}
    with open(faces_dir / "identities.csv") as handle:
        for row in csv.DictReader(handle):
            photos.setdefault(row["identity"], []).append(faces_dir / row["file"])
    return photos


def first_photo_per_person(faces_dir: Path) -> dict[str, Path]:
    """The photo each identity is built from (and each target is): the first one listed."""
    return {person: paths[0] for person, paths in photos_per_person(faces_dir).items()}


def heldout_photos(faces_dir: Path) -> dict[str, list[Path]]:
    """Every photo of each person except the first: never seen by the engine when that person is the identity."""
    return {person: paths[1:] for person, paths in photos_per_person(faces_dir).items()}


@dataclass
class Judge:
    dlib: DlibFaceAnalyzer
    grader: MobileFaceNet
    parser: FaceParser

    def face(self, image: ImageRGB, near: Face | None = None) -> Face:
        faces = self.dlib.detect(image)
        if not faces:
            raise ValueError("no face found by dlib")
        if near is None:
            return max(faces, key=lambda f: f.area)
        centre = np.array(near.center)
        return min(faces, key=lambda f: float(np.linalg.norm(np.array(f.center) - centre)))

    def reference(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """Mean MobileFaceNet embedding and mean dlib descriptor over `paths` (the usual one-template-per-person
        reference of face verification; with one held-out photo it is that photo's embedding)."""
        if not paths:
            raise ValueError("a held-out reference needs at least one photo")
        grader, dlib = [], []
        for path in paths:
            image = load_image(path).rgb
            face = self.face(image)
            grader.append(self.grader.embed(image, face.kps5))
            dlib.append(self.dlib.embed(image, face))
        return np.mean(grader, axis=0), np.mean(dlib, axis=0)

    def inner_face(self, shape: tuple[int, ...], face: Face) -> np.ndarray:
        assert face.landmarks68 is not None
        region = np.zeros(shape[:2], np.uint8)
        cv2.fillConvexPoly(region, cv2.convexHull(face.landmarks68.astype(np.int32)), 255)
        k = max(3, int(face.height * 0.08) | 1)
        return cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))

    def foreign_hair(self, result: ImageRGB, target: ImageRGB, face: Face) -> float:
        target_labels = self.parser.labels(target, face.box)
        result_labels = self.parser.labels(result, face.box)
        face_area = np.isin(target_labels, np.array(FACE_INTERIOR, np.uint8))
        if not face_area.any():
            return 0.0
        k = max(3, int(face.height * 0.04) | 1)  # a disc of radius ~2% of the face height
        own_hair = cv2.dilate(
            (target_labels == FaceClass.HAIR).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        )
        hair = (result_labels == FaceClass.HAIR) & (own_hair == 0)
        return float((hair & face_area).sum()) / float(face_area.sum())


def heldout_agreement(judge: Judge, faces_dir: Path) -> dict[str, tuple[float, float]]:
    """person -> (MobileFaceNet cos, dlib distance) between the identity photo and its held-out reference: how
    well a perfect swap (the person's own photo) could score on the held-out figures."""
    out: dict[str, tuple[float, float]] = {}
    for person, path in first_photo_per_person(faces_dir).items():
        image = load_image(path).rgb
        face = judge.face(image)
        grader_ref, dlib_ref = judge.reference(heldout_photos(faces_dir)[person])
        grader = MobileFaceNet.similarity(judge.grader.embed(image, face.kps5), grader_ref)
        out[person] = (grader, float(np.linalg.norm(judge.dlib.embed(image, face) - dlib_ref)))
    return out


def evaluate_pairs(pipe: RefinePipeline, faces_dir: Path, judge: Judge) -> Iterator[PairResult]:
    people = first_photo_per_person(faces_dir)
    photos = {p: load_image(path).rgb for p, path in people.items()}
    faces = {p: judge.face(img) for p, img in photos.items()}
    grader_vec = {p: judge.grader.embed(photos[p], faces[p].kps5) for p in people}
    dlib_vec = {p: judge.dlib.embed(photos[p], faces[p]) for p in people}
    heldout = {p: judge.reference(paths) for p, paths in heldout_photos(faces_dir).items()}
    identities = {p: pipe.identity_from_image(photos[p], p) for p in people}
    for target in people:
        for source in people:
            if target == source:
                continue
            result = pipe(photos[target], identities[source])
            if result.image is None:
                raise ValueError(f"{target} <- {source}: {result.report.status} {result.report.message}")
            out = result.image
            face = judge.face(out, near=faces[target])
            g = judge.grader.embed(out, face.kps5)
            d = judge.dlib.embed(out, face)
            inner = judge.inner_face(out.shape, faces[target])
            sharp_target = laplacian_variance(photos[target], inner)
            yield PairResult(
                target=target,
                identity=source,
                grader_identity=MobileFaceNet.similarity(g, grader_vec[source]),
                grader_original=MobileFaceNet.similarity(g, grader_vec[target]),
                dlib_identity=float(np.linalg.norm(d - dlib_vec[source])),
                dlib_original=float(np.linalg.norm(d - dlib_vec[target])),
                grader_heldout=MobileFaceNet.similarity(g, heldout[source][0]),
                dlib_heldout=float(np.linalg.norm(d - heldout[source][1])),
                sharpness_ratio=laplacian_variance(out, inner) / sharp_target if sharp_target > 0 else 1.0,
                foreign_hair=judge.foreign_hair(out, photos[target], faces[target]),
                status=str(result.report.status),
                image=out,
            )


def contact_sheet(pairs: list[PairResult], faces_dir: Path, tile: int = 256) -> ImageRGB:
    """One row per pair: target | identity photo | a held-out photo of the identity | result (square crops).

    The first line gives the identity-photo figures, the second the held-out ones (grader cos, dlib distance;
    the original's in brackets)."""
    people = photos_per_person(faces_dir)
    rows = []
    for pair in pairs:
        target = load_image(people[pair.target][0]).rgb
        identity = load_image(people[pair.identity][0]).rgb
        other = load_image(people[pair.identity][1]).rgb
        cells = [_square(target, tile), _square(identity, tile), _square(other, tile), _square(pair.image, tile)]
        row = np.hstack(cells)
        lines = [
            f"{pair.target} <- {pair.identity}  id photo: grader {pair.grader_identity:.2f} "
            f"(orig {pair.grader_original:.2f}) dlib {pair.dlib_identity:.2f} (orig {pair.dlib_original:.2f})",
            f"held-out: grader {pair.grader_heldout:.2f} {'pass' if pair.grader_heldout_pass else 'FAIL'}, "
            f"dlib {pair.dlib_heldout:.2f} {'pass' if pair.dlib_heldout_pass else 'FAIL'}",
        ]
        # White on a dark band: a thick outline under thin text does not line up in this OpenCV's font renderer.
        row[: 8 + 20 * len(lines)] //= 3
        for n, label in enumerate(lines):
            cv2.putText(row, label, (6, 18 + 20 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    return np.vstack(rows)


def _square(image: ImageRGB, tile: int) -> ImageRGB:
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (tile, tile), interpolation=cv2.INTER_AREA)
