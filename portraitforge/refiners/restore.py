"""Face restoration stage: GFPGAN, CodeFormer, RestoreFormer or GPEN on the aligned crop, after the swap and
before blending (inswapper paints at 128 px; restoration re-synthesises skin, eyes and teeth at 512 px).

The crop is resized to the network's face size, restored, resized back and blended with the swapped crop:
`restore_weight` 1 keeps only the restored pixels, 0 leaves the crop unchanged (FaceFusion's face enhancer
blend; GFPGAN's and CodeFormer's own scripts paste the restored face at full weight).

Unlike the upscaler, restoration is not tiled: these networks see the whole face at once (a StyleGAN decoder or a
VQ codebook transformer over the 16x16 latent), so a tile would be a different, smaller "face". Several crops are
run as one batch instead, and the batch is halved after an out-of-memory error as the upscaler halves its tiles.

Value ranges follow each reference implementation: GFPGAN (GFPGANer.enhance) and CodeFormer
(inference_codeformer.py) normalise the face to [-1, 1] and map the output back with min_max=(-1, 1), so their
networks are called directly (spandrel's descriptor call would clamp their [-1, 1] output to [0, 1]);
RestoreFormer's spandrel descriptor does that conversion itself. GFPGAN's StyleGAN decoder draws fresh noise on
every call, so the stage seeds it (`seed`): the same crop always restores to the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from portraitforge.errors import BadInputError, OutOfMemoryError, ParameterError
from portraitforge.refiners.upscale import is_out_of_memory
from portraitforge.types import ImageRGB

if TYPE_CHECKING:
    import torch

    from portraitforge.models.onnx_runtime import OnnxSessionPool
    from portraitforge.models.restorers import RestoreModel
    from portraitforge.models.store import ModelStore


@dataclass
class FaceRestorer:
    model: RestoreModel
    weight: float = 1.0  # restore_weight: share of the restored pixels in the result
    batch: int = 4  # crops per network call (halved on out-of-memory)
    seed: int = 0  # GFPGAN's decoder noise

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ParameterError(f"restore_weight {self.weight} outside 0..1")
        if self.batch < 1:
            raise ParameterError(f"restore batch {self.batch} must be at least 1")

    @property
    def name(self) -> str:
        return self.model.kind.name

    def params(self) -> dict[str, Any]:
        return {**self.model.params(), "restore_weight": self.weight}

    # --- network ------------------------------------------------------------------------------------------

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS in [0, 1] -> the restored faces in [0, 1], as the reference implementation computes them."""
        import torch

        kind = self.model.kind
        if kind.architecture == "onnx":
            return self._onnx(x)
        if not kind.signed_range:
            return self.model.descriptor(x)
        out = self.model.descriptor.model(x * 2.0 - 1.0)[0]
        return ((out + 1.0) / 2.0).clamp_(0.0, 1.0).to(torch.float32)

    def _onnx(self, x: torch.Tensor) -> torch.Tensor:
        """GPEN export: 1x3xSxS RGB in [-1, 1] in and out (FaceFusion's face enhancer pre/post-processing)."""
        import torch

        session = self.model.session
        name = session.get_inputs()[0].name
        outputs = []
        for face in x.cpu().numpy():  # the published export has a fixed batch of one
            y = session.run(None, {name: (face[None] * 2.0 - 1.0).astype(np.float32)})[0]
            outputs.append(np.clip(y, -1.0, 1.0))
        return torch.from_numpy((np.concatenate(outputs) + 1.0) / 2.0)

    def restore_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS float32 in [0, 1] (S = the model's face size) -> restored, same shape; batched with backoff."""
        import torch

        size = self.model.kind.size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (size, size):
            raise BadInputError(f"restoration input must be Bx3x{size}x{size}, got {tuple(x.shape)}")
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            while True:
                try:
                    return torch.cat([self._network(chunk) for chunk in x.split(self.batch)])
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    if self.batch == 1:
                        raise OutOfMemoryError("out of memory in face restoration, even one face at a time") from None
                    self.batch //= 2  # remembered, so later calls do not hit the same error
                    torch.manual_seed(self.seed)

    # --- images -------------------------------------------------------------------------------------------

    def restore_batch(self, crops: Sequence[ImageRGB]) -> list[ImageRGB]:
        """Restore several aligned face crops (any square size) in batched network calls."""
        import torch

        if not crops:
            return []
        size = self.model.kind.size
        for crop in crops:
            if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
                raise BadInputError("restoration input must be RGB uint8 arrays of shape HxWx3")
        faces = np.stack([_resize(crop, size, size) for crop in crops]).astype(np.float32) / 255.0
        x = torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous().to(self.model.device)
        restored = self.restore_tensor(x).permute(0, 2, 3, 1).cpu().numpy()
        out: list[ImageRGB] = []
        for crop, face in zip(crops, restored, strict=True):
            back = _resize(face, crop.shape[1], crop.shape[0]) * 255.0
            mixed = self.weight * back + (1.0 - self.weight) * crop.astype(np.float32)
            out.append(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
        return out

    def __call__(self, crop: ImageRGB) -> ImageRGB:
        return self.restore_batch([crop])[0]


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area when shrinking (no aliasing), cubic when enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def build_restorer(
    name: str, weight: float, store: ModelStore, pool: OnnxSessionPool | None = None, device: str = "cpu"
) -> FaceRestorer | None:
    """`none` -> None; a restorer name -> its registry file (fetched when missing, else MODEL_UNAVAILABLE, exit 5)."""
    from portraitforge.models.restorers import RESTORE_CHOICES, RESTORER_KINDS, load_restore_model

    if name == "none":
        return None
    kind = RESTORER_KINDS.get(name)
    if kind is None:
        raise ParameterError(f"unknown restorer '{name}' (one of: {', '.join(RESTORE_CHOICES)})")
    path = store.ensure(kind.spec.name)
    return FaceRestorer(load_restore_model(kind, path, device=device, pool=pool), weight=weight)
