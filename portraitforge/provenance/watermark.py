"""Invisible watermark: a 64-bit frame (tool magic, operation, output id, CRC-16) in the red-difference chroma.

Why not `imwatermark` as-is: its DWT-DCT and DWT-DCT-SVD methods (the SDXL reference) lay the bits out in
row-major order over the whole image and quantise the largest AC coefficient of each block. A crop moves that
row-major index, a resize moves the coefficient, and JPEG q75 flips it: on the 30 corpus photos they decoded
0-7% after JPEG q75, a 0.5x resize, a 10% crop or PNG->WebP, and dwtDct 63% as written
(benchmarks/bench_provenance.py reruns that comparison). So this module keeps their idea (quantisation-index
modulation of a low-frequency block statistic, in chroma where the eye is least sensitive) and changes what
makes it fragile:

- the statistic is the mean of the *inner half* of a 16x16 block of Cr (the DC term of a DWT-LL / DCT block),
  which JPEG, WebP and Lanczos/area resizing all preserve, and which block-edge blur does not reach;
- the bits are tiled in an 8x8 cyclic pattern of blocks, so any crop only shifts the pattern cyclically;
- the decoder tries every block phase (one box filter, then strided sampling) at scales 1 and 0.5, every
  cyclic shift of the pattern, and accepts a frame only when the 8-bit magic, the zero version and the
  CRC-16 all match (26 check bits: a random image passes with probability ~1e-5 over all trials);
- each bit is repeated in every tile (a 512x512 image carries it 16 times) and decoded from the sum of the
  repetitions (soft decision), which is the error correction; a global chroma shift is removed first.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

import cv2
import numpy as np

from portraitforge.types import ImageRGB

BLOCK = 16  # pixels per block side at the embedding scale
TILE = 8  # blocks per side of the cyclic bit pattern: 64 slots
STEP = 7.0  # QIM step on Cr (0..255 units): PSNR >= 40 dB on every corpus photo (tests/test_provenance.py)
MAGIC = 0xA7  # "portraitforge": the tool identifier
VERSION = 0
ID_BITS = 36
ID_HEX = ID_BITS // 4  # output ids are 9 hex digits
SCALES = (1.0, 0.5)  # decoder tries the original scale and a 2x downscale
TOP_PHASES = 4  # block phases (per scale) whose pattern is tried against every cyclic shift
# Bits are XORed with a fixed pseudo-random sequence so that no payload embeds a flat lattice.
_WHITEN = np.random.default_rng(0x5EED).integers(0, 2, TILE * TILE).astype(np.uint8)
# Cr -> RGB: only R and G move (JFIF YCbCr), so a Cr offset leaves luminance nearly alone.
_CR_TO_R, _CR_TO_G = 1.402, -0.714136


class Operation(enum.IntEnum):
    generate = 0
    swap = 1
    batch = 2
    ui = 3


@dataclass(frozen=True)
class WatermarkPayload:
    operation: Operation
    output_id: str  # ID_HEX lowercase hex digits

    @classmethod
    def new(cls, operation: str | Operation) -> WatermarkPayload:
        op = operation if isinstance(operation, Operation) else Operation[operation]
        return cls(op, secrets.token_hex(5)[:ID_HEX])

    def to_dict(self) -> dict[str, str]:
        return {"tool": "portraitforge", "operation": self.operation.name, "output_id": self.output_id}


@dataclass(frozen=True)
class WatermarkReading:
    payload: WatermarkPayload
    confidence: float  # mean |soft bit| over the 64 slots, 0..1
    scale: float  # decoder scale that found it (1.0 or 0.5)


# ------------------------------------------------------------------------------------------ frame


def _crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (stdlib has only CRC-32, which would leave no room in 64 bits)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode_frame(payload: WatermarkPayload) -> np.ndarray:
    """64 bits: magic(8) version(2) operation(2) id(36) crc16(16), whitened."""
    head = (MAGIC << 40) | (VERSION << 38) | (int(payload.operation) << 36) | int(payload.output_id, 16)
    word = (head << 16) | _crc16(head.to_bytes(6, "big"))
    bits = np.array([(word >> (63 - i)) & 1 for i in range(64)], dtype=np.uint8)
    return bits ^ _WHITEN


def decode_frame(bits: np.ndarray) -> WatermarkPayload | None:
    plain = bits.astype(np.uint8) ^ _WHITEN
    word = int("".join(str(int(b)) for b in plain), 2)
    head, crc = word >> 16, word & 0xFFFF
    if head >> 40 != MAGIC or (head >> 38) & 3 != VERSION or _crc16(head.to_bytes(6, "big")) != crc:
        return None
    return WatermarkPayload(Operation((head >> 36) & 3), f"{head & ((1 << ID_BITS) - 1):0{ID_HEX}x}")


# -------------------------------------------------------------------------------------- embedding


def _cr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return 0.5 * r - 0.418688 * g - 0.081312 * b  # JFIF Cr without the +128 offset


def _inner_cr_means(blocks: np.ndarray) -> np.ndarray:
    """Mean Cr of the inner half (BLOCK/2 square, centred) of each block: the statistic the decoder measures.
    `blocks` is (rows, BLOCK, cols, BLOCK, 3)."""
    q = BLOCK // 4
    inner = blocks[:, q : BLOCK - q, :, q : BLOCK - q].astype(np.float32)
    return _cr(inner).mean(axis=(1, 3))


def embed(rgb: ImageRGB, payload: WatermarkPayload) -> ImageRGB:
    """Return a watermarked copy (uint8 RGB). Images under one block per side are returned unchanged."""
    h, w = rgb.shape[:2]
    rows, cols = h // BLOCK, w // BLOCK
    out = np.array(rgb, dtype=np.uint8, copy=True)
    if rows == 0 or cols == 0:
        return out
    frame = encode_frame(payload).reshape(TILE, TILE)
    bits = np.tile(frame, (rows // TILE + 1, cols // TILE + 1))[:rows, :cols].astype(np.float32)
    dither = bits * (STEP / 2)
    # A view of the covered area as (rows, BLOCK, cols, BLOCK, 3): offsets broadcast per block, no full-size field.
    blocks = out[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK, 3)
    base = blocks.astype(np.float32)
    # Blocks that are mostly blown out (white or black in R or G) are left alone: there the Cr offset could only
    # be bought by pushing the one channel that is not clipped much harder (a white background costs 2 dB).
    # The decoder does not need them: every bit is repeated in every tile and decoded by soft majority.
    q = BLOCK // 4
    inner_rg = blocks[:, q : BLOCK - q, :, q : BLOCK - q, :2]
    clipped = ((inner_rg <= 2) | (inner_rg >= 253)).any(axis=-1).mean(axis=(1, 3)) > 0.5
    total = np.zeros((rows, cols), np.float32)
    # Two passes: the second corrects what clipping at 0/255 and rounding took from the first.
    for _ in range(2):
        means = _inner_cr_means(blocks)
        total += np.where(clipped, 0.0, np.round((means - dither) / STEP) * STEP + dither - means)
        shift = total[:, None, :, None]
        blocks[..., 0] = np.clip(np.rint(base[..., 0] + _CR_TO_R * shift), 0, 255)
        blocks[..., 1] = np.clip(np.rint(base[..., 1] + _CR_TO_G * shift), 0, 255)
    return out


# --------------------------------------------------------------------------------------- decoding


def _bins(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the complex block values into the TILE x TILE slots by (row mod TILE, col mod TILE)."""
    r, c = z.shape
    pr, pc = -r % TILE, -c % TILE
    padded = np.pad(z, ((0, pr), (0, pc)))
    ones = np.pad(np.ones(z.shape), ((0, pr), (0, pc)))
    shape = (padded.shape[0] // TILE, TILE, padded.shape[1] // TILE, TILE)
    return padded.reshape(shape).sum(axis=(0, 2)), ones.reshape(shape).sum(axis=(0, 2))


def _soft_bits(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-slot soft bit in -1..1 (+1 = bit 0) after removing a global rotation (a uniform Cr shift)."""
    mean = sums / np.maximum(counts, 1)
    # Flat areas (sky, a blurred background, WebP's smoothed chroma) put the same value in every slot; the
    # whitened frame has about as many 0s as 1s, so the component common to all slots is not watermark.
    mean = mean - mean.mean()
    theta = np.angle(np.sum(mean**2)) / 2  # squaring removes the bit signs
    return np.real(mean * np.exp(-1j * theta))


def _candidates(cr: np.ndarray, scale: float) -> list[tuple[float, np.ndarray]]:
    """(confidence, TILE x TILE soft bits) for the best block phases at one scale."""
    block = max(2, round(BLOCK * scale))
    inner = block // 2
    h, w = cr.shape
    if h < block * 2 or w < block * 2:
        return []
    means = cv2.blur(cr.astype(np.float32), (inner, inner), borderType=cv2.BORDER_REFLECT)
    z = np.exp(2j * np.pi * means / STEP).astype(np.complex64)
    found = []
    for py in range(block):
        for px in range(block):
            # cv2.blur's even kernel is centred half a pixel up-left: block centre = phase + block/2
            sub = z[py + block // 2 : h - block // 2 + 1 : block, px + block // 2 : w - block // 2 + 1 : block]
            if sub.size == 0:
                continue
            soft = _soft_bits(*_bins(sub))
            found.append((float(np.mean(np.abs(soft))), soft))
    found.sort(key=lambda item: -item[0])
    return found[:TOP_PHASES]


def decode(rgb: ImageRGB) -> WatermarkReading | None:
    """Find a portraitforge watermark at any block phase, cyclic shift, scale 1 or 0.5; None if absent."""
    cr = _cr(np.asarray(rgb, dtype=np.float32))
    for scale in SCALES:
        for confidence, soft in _candidates(cr, scale):
            for sign in (1.0, -1.0):  # the global rotation is known up to half a turn
                hard = (sign * soft < 0).astype(np.uint8)
                for dy in range(TILE):
                    for dx in range(TILE):
                        payload = decode_frame(np.roll(hard, (dy, dx), axis=(0, 1)).ravel())
                        if payload is not None:
                            return WatermarkReading(payload, round(confidence, 3), scale)
    return None


def psnr(a: ImageRGB, b: ImageRGB) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
