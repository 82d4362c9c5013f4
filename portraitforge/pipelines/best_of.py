"""Best-of-N: draw N candidates (seeds), refine each toward the identity, keep the K the grader likes best.

The ranking reads what the refine already measured, so choosing costs no extra model call (the grading
overhead per candidate is the refine's own "grade" stage; see benchmarks/bench_best_of.py):
1. usable results (OK, LOW_QUALITY) before failed ones (no face, errors);
2. the second recogniser's identity similarity (`quality.grader`, a model the swap engine never steers with,
   so a candidate cannot win by fooling it), higher first; over several faces, the worst face counts;
3. then the engine's own identity distance (lower first), the seam score (lower first), the candidate's index.
Candidates without a grader score (no grader loaded) are ranked by the steps that remain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from portraitforge.errors import ParameterError
from portraitforge.types import Status

if TYPE_CHECKING:
    from portraitforge.pipelines.portrait import PortraitImage

USABLE = (Status.OK, Status.LOW_QUALITY)


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's figures and where it ranked (rank 0 is the best)."""

    index: int
    seed: int | None
    status: Status
    grader_similarity: float | None  # worst face's similarity to the identity by the second recogniser
    grader_model: str | None
    identity_distance: float | None  # worst face's distance in the engine's own space
    seam_score: float | None
    rank: int = -1
    kept: bool = False

    def sort_key(self) -> tuple[int, float, float, float, int]:
        grader = -self.grader_similarity if self.grader_similarity is not None else math.inf
        distance = self.identity_distance if self.identity_distance is not None else math.inf
        seam = self.seam_score if self.seam_score is not None else math.inf
        return (0 if self.status in USABLE else 1, grader, distance, seam, self.index)

    def to_dict(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 5)

        return {
            "index": self.index,
            "seed": self.seed,
            "status": self.status.value,
            "grader_similarity": r(self.grader_similarity),
            "grader_model": self.grader_model,
            "identity_distance": r(self.identity_distance),
            "seam_score": r(self.seam_score),
            "rank": self.rank,
            "kept": self.kept,
        }


def candidate_score(result: PortraitImage) -> CandidateScore:
    """The figures of one candidate, read from its refine report."""
    grader: list[float] = []
    distance: list[float] = []
    seam: list[float] = []
    model: str | None = None
    faces = result.report.faces if result.report is not None else []
    for face in faces:
        quality = face.quality
        if quality is None:
            continue
        seam.append(quality.seam_score)
        if quality.identity_distance is not None:
            distance.append(quality.identity_distance)
        if quality.grader is not None:
            grader.append(quality.grader.identity_similarity)
            model = quality.grader.model
    return CandidateScore(
        index=result.index,
        seed=result.seed,
        status=result.status,
        grader_similarity=min(grader) if grader else None,
        grader_model=model,
        identity_distance=max(distance) if distance else None,
        seam_score=max(seam) if seam else None,
    )


def score_from_faces(index: int, seed: int | None, status: Status, faces: Sequence[dict[str, Any]]) -> CandidateScore:
    """The same figures read from a recorded report's `faces` list (`FaceReport.to_dict()`, as in a batch
    manifest), so that a batch ranks its candidates from what it stored, after a kill and resume too."""
    grader: list[float] = []
    distance: list[float] = []
    seam: list[float] = []
    model: str | None = None
    for face in faces:
        quality = face.get("quality")
        if not quality:
            continue
        seam.append(float(quality["seam_score"]))
        if quality.get("identity_distance") is not None:
            distance.append(float(quality["identity_distance"]))
        if quality.get("grader"):
            grader.append(float(quality["grader"]["identity_similarity"]))
            model = quality["grader"].get("model")
    return CandidateScore(
        index=index,
        seed=seed,
        status=status,
        grader_similarity=min(grader) if grader else None,
        grader_model=model,
        identity_distance=max(distance) if distance else None,
        seam_score=max(seam) if seam else None,
    )


def rank_scores(scores: Sequence[CandidateScore], keep: int) -> list[CandidateScore]:
    """Every score in input order with its rank, and `kept` on the `keep` best usable ones."""
    if keep < 1:
        raise ParameterError(f"--keep {keep} must be at least 1")
    order = sorted(range(len(scores)), key=lambda i: scores[i].sort_key())
    kept_positions = {i for i in order[:keep] if scores[i].status in USABLE}
    return [replace(s, rank=order.index(i), kept=i in kept_positions) for i, s in enumerate(scores)]


def rank_candidates(results: Sequence[PortraitImage], keep: int) -> tuple[list[PortraitImage], list[CandidateScore]]:
    """(the `keep` best results, best first; every candidate's score in input order with its rank)."""
    ranked = rank_scores([candidate_score(r) for r in results], keep)
    kept = [results[i] for i in sorted(range(len(ranked)), key=lambda i: ranked[i].rank) if ranked[i].kept]
    return kept, ranked
