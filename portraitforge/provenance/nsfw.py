"""Optional NSFW gate (extra `nsfw`): nudenet's bundled 320n detector (ONNX, run by onnxruntime).

nudenet is imported only when the gate is enabled (`--nsfw-check` or `nsfw_check: true`): its wheel metadata
says MIT but its LICENSE file is AGPL-3.0, so it stays an optional extra that a default install never loads.
Policies: `refuse` (no output, exit 3), `blur` (detected regions of the output are pixelated; flagged inputs
are reported), `flag` (output written unchanged, findings in the report and run log).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.types import ImageRGB

# Exposed sexual regions only: covered regions, bellies, armpits, feet and male chests are normal in portraits.
UNSAFE_LABELS = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
# nudenet keeps boxes above 0.2; 0.5 is the usual operating point (at 0.2 one ordinary portrait of
# ../shared/faces is flagged at 0.28: the false positives the anchors' users complain about).
DEFAULT_THRESHOLD = 0.5
POLICIES = ("refuse", "blur", "flag")


class NsfwRefusedError(BadInputError):
    """The gate found unsafe content under the `refuse` policy (exit 3, like other refused input)."""


@dataclass(frozen=True)
class Finding:
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, w, h in image pixels

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 3), "box": list(self.box)}


@dataclass
class NsfwGate:
    policy: str = "refuse"
    threshold: float = DEFAULT_THRESHOLD
    flags: list[dict[str, Any]] = field(default_factory=list)  # what was found, per checked image
    _detector: Any = None

    @classmethod
    def from_config(cls, config: Any) -> NsfwGate | None:
        if not getattr(config, "nsfw_check", False):
            return None
        return cls(policy=str(getattr(config, "nsfw_policy", "refuse")))

    def _model(self) -> Any:
        if self._detector is None:
            self._detector = load_detector()
        return self._detector

    def detect(self, rgb: ImageRGB) -> list[Finding]:
        bgr = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
        found = []
        for hit in self._model().detect(bgr):
            if hit["class"] in UNSAFE_LABELS and float(hit["score"]) >= self.threshold:
                x, y, w, h = (int(v) for v in hit["box"])
                found.append(Finding(hit["class"], float(hit["score"]), (x, y, w, h)))
        return found

    def check_input(self, rgb: ImageRGB, what: str) -> None:
        """Target or identity photo: refuse raises; blur and flag record the finding and go on."""
        found = self.detect(rgb)
        if not found:
            return
        self._record(what, found)
        if self.policy == "refuse":
            raise NsfwRefusedError(f"NSFW gate refused the {what}: {_summary(found)}")

    def check_output(self, rgb: ImageRGB) -> ImageRGB:
        """The result: refuse raises (nothing is written); blur pixelates the regions; flag records them."""
        found = self.detect(rgb)
        if not found:
            return rgb
        self._record("output", found)
        if self.policy == "refuse":
            raise NsfwRefusedError(f"NSFW gate refused the output: {_summary(found)}")
        return pixelate(rgb, [f.box for f in found]) if self.policy == "blur" else rgb

    def _record(self, what: str, found: list[Finding]) -> None:
        self.flags.append({"image": what, "policy": self.policy, "findings": [f.to_dict() for f in found]})

    def report(self) -> dict[str, Any]:
        return {"policy": self.policy, "threshold": self.threshold, "flags": self.flags}


@lru_cache(maxsize=1)
def load_detector() -> Any:
    """The 320n ONNX detector, loaded once per process (a gate is made per image, the session is not)."""
    try:
        from nudenet import NudeDetector  # AGPL-3.0 LICENSE file: only ever imported here
    except ImportError:
        raise ModelUnavailableError("the NSFW gate needs the nsfw extra: pip install 'portraitforge[nsfw]'") from None
    return NudeDetector(providers=["CPUExecutionProvider"])


def _summary(found: list[Finding]) -> str:
    return ", ".join(f"{f.label.lower()} {f.score:.2f}" for f in found)


def pixelate(rgb: ImageRGB, boxes: list[tuple[int, int, int, int]], cells: int = 8) -> ImageRGB:
    """Coarse mosaic over each box (a blur can be partly inverted; 8x8 cells cannot)."""
    out = np.array(rgb, copy=True)
    h, w = out.shape[:2]
    for x, y, bw, bh in boxes:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = out[y0:y1, x0:x1]
        small = cv2.resize(region, (cells, cells), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out
