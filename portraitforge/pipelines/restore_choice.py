"""Choosing a face restorer per identity by measurement: refine sample targets with each candidate restorer (and
with none) and keep the one whose results the second recogniser (`quality.grader`) finds most like the identity.

Restoration re-synthesises a face from priors learned on other people, so it can move a face away from the
identity as well as sharpen it; which restorer helps depends on the identity. The choice is cached by the
caller (`RestorerChoice` holds one per identity name), so a batch pays it once per identity.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from portraitforge.errors import BadInputError
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.restore import FaceRestorer
from portraitforge.types import Identity, ImageRGB, Status


@dataclass
class RestorerChoice:
    """Candidate restorers by name (`None` = no restoration) and the choice made for each identity."""

    candidates: Mapping[str, FaceRestorer | None]
    chosen: dict[str, str] = field(default_factory=dict)  # identity name -> restorer name
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)  # identity -> restorer -> similarity

    def choose(self, refiner: RefinePipeline, identity: Identity, targets: Sequence[ImageRGB]) -> str:
        """The restorer name for `identity`, measured on `targets` the first time it is asked for."""
        if identity.name in self.chosen:
            return self.chosen[identity.name]
        if refiner.grader is None:
            raise BadInputError("choosing a restorer by measurement needs a grader (grader: mobilefacenet or dlib)")
        if not targets:
            raise BadInputError("choosing a restorer needs at least one sample target")
        scores: dict[str, float | None] = {}
        for name, restorer in self.candidates.items():
            pipe = replace(refiner, restorer=restorer)
            values = [v for v in (_grader_similarity(pipe, t, identity) for t in targets) if v is not None]
            scores[name] = statistics.median(values) if values else None
        ranked = sorted((v, -i, n) for i, (n, v) in enumerate(scores.items()) if v is not None)
        if not ranked:
            raise BadInputError(f"no sample target could be refined toward '{identity.name}' (no face found)")
        self.chosen[identity.name] = ranked[-1][2]  # highest similarity; ties go to the earlier candidate
        self.scores[identity.name] = scores
        return self.chosen[identity.name]

    def pipeline_for(self, refiner: RefinePipeline, identity: Identity, targets: Sequence[ImageRGB]) -> RefinePipeline:
        """The refiner with this identity's chosen restorer (models shared, nothing reloaded)."""
        return replace(refiner, restorer=self.candidates[self.choose(refiner, identity, targets)])

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": dict(self.chosen), "scores": {k: dict(v) for k, v in self.scores.items()}}


def _grader_similarity(pipe: RefinePipeline, target: ImageRGB, identity: Identity) -> float | None:
    result = pipe(target, identity)
    if result.report.status not in (Status.OK, Status.LOW_QUALITY):
        return None
    values = [
        f.quality.grader.identity_similarity
        for f in result.report.faces
        if f.quality is not None and f.quality.grader is not None
    ]
    return min(values) if values else None
