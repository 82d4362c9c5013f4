"""MobileFaceNet (192-d) face embeddings on TFLite: the project's independent identity grader.

The engine never steers with this network, so its cosine similarity can judge a swap without being
gamed. On ../shared/faces (276 pairs) same-person pairs score >= 0.52 and different-person pairs
<= 0.41, so about 0.45 separates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.litert import LiteModel
from portraitforge.refiners.align import alignment_matrix
from portraitforge.types import FloatArray, ImageRGB

MOBILEFACENET_SPACE = "mobilefacenet-192"
MOBILEFACENET_THRESHOLD = 0.45  # cosine; measured gap on ../shared/faces is 0.41 .. 0.52
_SIZE = 112


@dataclass
class MobileFaceNet:
    """ArcFace 5-point alignment at 112, RGB (x - 127.5) / 128, L2-normalised 192-d output."""

    model: LiteModel
    batch: int  # the graph's batch size after an attempted resize to 1 (this file ships with 2)
    name: str = "mobilefacenet"
    embedding_space: str = MOBILEFACENET_SPACE
    threshold: float = MOBILEFACENET_THRESHOLD

    @classmethod
    def load(cls, path: Path, num_threads: int | None = None) -> MobileFaceNet:
        model = _resized_to_batch_one(LiteModel.load(path, num_threads=num_threads))
        if model is None:
            model = LiteModel.load(path, num_threads=num_threads)
        shape = model.input_shape()
        if len(shape) != 4 or shape[1:] != (_SIZE, _SIZE, 3):
            raise ModelUnavailableError(f"{Path(path).name}: expected a [N,112,112,3] input, got {list(shape)}")
        return cls(model=model, batch=shape[0])

    @staticmethod
    def preprocess(image_rgb: ImageRGB, kps5: FloatArray) -> FloatArray:
        """The 112x112 network input for one face; black outside the frame as in insightface's norm_crop."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise BadInputError("MobileFaceNet expects an RGB image")
        matrix = alignment_matrix(np.asarray(kps5, np.float32), _SIZE)
        crop = cv2.warpAffine(image_rgb, matrix, (_SIZE, _SIZE), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        return (crop.astype(np.float32) - 127.5) / 128.0

    def embed(self, image_rgb: ImageRGB, kps5: FloatArray) -> FloatArray:
        return self.embed_many([(image_rgb, kps5)])[0]

    def embed_many(self, faces: Sequence[tuple[ImageRGB, FloatArray]]) -> FloatArray:
        """(N, 192) unit vectors; faces go through the network `batch` at a time (zero-padded)."""
        inputs = [self.preprocess(image, kps5) for image, kps5 in faces]
        out = np.zeros((len(inputs), 192), np.float32)
        for start in range(0, len(inputs), self.batch):
            chunk = inputs[start : start + self.batch]
            # The file's batch is fixed at 2; samples do not interact, so padding is exact.
            block = np.zeros((self.batch, _SIZE, _SIZE, 3), np.float32)
            block[: len(chunk)] = chunk
            vectors = self.model.run(block)[0][: len(chunk)]
            out[start : start + len(chunk)] = vectors
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    @staticmethod
    def similarity(a: FloatArray, b: FloatArray) -> float:
        """Cosine similarity (inputs need not be normalised)."""
        from portraitforge.refiners.grade import cosine

        return cosine(a, b)

    def same_person(self, a: FloatArray, b: FloatArray) -> bool:
        return self.similarity(a, b) >= self.threshold


def _resized_to_batch_one(model: LiteModel) -> LiteModel | None:
    """Batch 1 halves the work for single faces when the graph allows it; None when it does not.

    This file's graph refuses (XNNPACK cannot reshape node 230) and the failed resize leaves the
    interpreter unusable, so the caller loads a fresh one and pads the batch instead.
    """
    shape = model.input_shape()
    if len(shape) != 4 or shape[0] == 1:
        return model
    interpreter = model.interpreter
    try:
        interpreter.resize_tensor_input(model.inputs[0]["index"], [1, *shape[1:]])
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError):
        return None
    resized = replace(model, inputs=interpreter.get_input_details(), outputs=interpreter.get_output_details())
    if tuple(resized.outputs[0]["shape"][:1]) != (1,):
        return None
    return resized
