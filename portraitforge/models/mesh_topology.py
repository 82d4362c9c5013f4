"""Topology of MediaPipe's 468-point face mesh, read as data from `face_mesh_connections.py`.

The file ships in the `mediapipe` wheel (Apache-2.0). It is parsed with `ast` and `ast.literal_eval`,
never imported or executed: every `NAME = frozenset([(i, j), ...])` assignment is one edge set.

What the file holds (mediapipe 0.10.14), checked by tests/test_mediapipe_face.py:
- FACEMESH_TESSELATION: 2556 directed pairs = 852 triangles written as edge triples; 1322 distinct edges.
  The mouth and both eye openings are holes (88 boundary edges: 36 face oval, 20 inner lip, 2 x 16 eyes),
  so no triangle lies inside them. MediaPipe's canonical face model has 898 triangles: these 852 plus
  46 that close the holes (18 mouth, 2 x 14 eyes), which `fill_loop` rebuilds.
- Enumerating 3-cliques of the edge graph finds 854: two vertex triples are pairwise connected without
  being a face; each of their three edges already bounds two real triangles, which is how they are dropped.
- Lips: an outer and an inner closed loop of 20 vertices; eyes: closed loops of 16; face oval: 36;
  brows: two open chains each (upper and lower), closed here through their tessellation end edges.
"""

from __future__ import annotations

import ast
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from portraitforge.errors import BadInputError
from portraitforge.types import FloatArray

Edge = tuple[int, int]

# Corner vertices that split a loop into its two lids / lips (for `fill_loop`).
INNER_LIP_CORNERS = (78, 308)
IMAGE_LEFT_EYE_CORNERS = (33, 133)  # the subject's right eye
IMAGE_RIGHT_EYE_CORNERS = (362, 263)  # the subject's left eye


def read_edge_sets(path: str | os.PathLike[str]) -> dict[str, list[Edge]]:
    """Every top-level `NAME = frozenset([...pairs...])` literal in the file, in source order."""
    p = Path(path)
    try:
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{p}: cannot read face mesh connections ({exc})") from None
    sets: dict[str, list[Edge]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        call = node.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "frozenset"):
            continue
        if len(call.args) != 1 or not isinstance(call.args[0], ast.List | ast.Tuple):
            continue  # unions such as FACEMESH_CONTOURS are built from the others
        try:
            pairs = ast.literal_eval(call.args[0])
        except ValueError:
            continue
        if all(isinstance(e, tuple) and len(e) == 2 and all(isinstance(i, int) for i in e) for e in pairs):
            sets[node.targets[0].id] = [(int(a), int(b)) for a, b in pairs]
    return sets


def _key(a: int, b: int) -> Edge:
    return (a, b) if a < b else (b, a)


def triangles_from_edges(edges: list[Edge]) -> np.ndarray:
    """(T, 3) int32 faces of a triangulated surface given only its edges.

    3-cliques of the edge graph, minus cliques whose three edges each lie in more than two cliques:
    on a manifold mesh every edge bounds at most two faces, so such a clique is a "hollow" triple.
    """
    keys = {_key(a, b) for a, b in edges if a != b}
    adjacency: dict[int, set[int]] = {}
    for a, b in keys:
        adjacency.setdefault(a, set()).add(b)
        adjacency.setdefault(b, set()).add(a)
    cliques = sorted(
        (a, b, c) for a in adjacency for b in adjacency[a] if b > a for c in adjacency[a] & adjacency[b] if c > b
    )
    uses = Counter(e for a, b, c in cliques for e in ((a, b), (b, c), (a, c)))
    faces = [t for t in cliques if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.asarray(faces, np.int32).reshape(-1, 3)


def _chains(edges: list[Edge]) -> list[list[int]]:
    """Walk an edge set of paths and cycles into vertex sequences (a closed loop does not repeat its start)."""
    adjacency: dict[int, list[int]] = {}
    for a, b in {_key(a, b) for a, b in edges}:
        adjacency.setdefault(a, []).append(b)
        adjacency.setdefault(b, []).append(a)
    if any(len(n) > 2 for n in adjacency.values()):
        raise ValueError("edge set branches; it is not a union of paths and loops")
    seen: set[int] = set()
    out: list[list[int]] = []
    # Open chains first (start at an end), then what is left are loops.
    starts = sorted(v for v, n in adjacency.items() if len(n) == 1) + sorted(adjacency)
    for start in starts:
        if start in seen:
            continue
        chain = [start]
        seen.add(start)
        while True:
            nxt = [v for v in adjacency[chain[-1]] if v not in seen]
            if not nxt:
                break
            chain.append(min(nxt))
            seen.add(chain[-1])
        out.append(chain)
    return out


def _closed_loop(edges: list[Edge]) -> list[int]:
    chains = _chains(edges)
    if len(chains) != 1:
        raise ValueError(f"expected one closed loop, found {len(chains)} chains")
    return chains[0]


def _join_chains(edges: list[Edge], surface: set[Edge]) -> list[int]:
    """Two open chains (upper and lower brow) -> one closed polygon through the surface edges joining their ends."""
    chains = _chains(edges)
    if len(chains) != 2 or any(len(c) < 2 for c in chains):
        raise ValueError(f"expected two open chains, found {len(chains)}")
    first, second = chains
    if _key(first[-1], second[0]) in surface or _key(first[0], second[-1]) in surface:
        return first + second
    if _key(first[-1], second[-1]) in surface or _key(first[0], second[0]) in surface:
        return first + second[::-1]
    raise ValueError("the two chains do not meet through tessellation edges")


def fill_loop(loop: Sequence[int], corners: tuple[int, int]) -> np.ndarray:
    """(len(loop) - 2, 3) triangles closing a hole, zipped between the two sides that meet at `corners`."""
    i0, i1 = loop.index(corners[0]), loop.index(corners[1])
    n = len(loop)
    side_a = [loop[(i0 + k) % n] for k in range((i1 - i0) % n + 1)]
    side_b = [loop[(i0 - k) % n] for k in range((i0 - i1) % n + 1)]
    if len(side_a) < 3 or len(side_b) < 3:
        raise ValueError("corners must split the loop into two sides of at least one inner vertex")
    tris = [(side_a[0], side_a[1], side_b[1])]
    i, j = 1, 1
    last_a, last_b = len(side_a) - 2, len(side_b) - 2
    while i < last_a or j < last_b:
        # Advance along the side that is behind in relative progress, keeping triangles well shaped.
        if j >= last_b or (i < last_a and i / last_a <= j / last_b):
            tris.append((side_a[i], side_a[i + 1], side_b[j]))
            i += 1
        else:
            tris.append((side_a[i], side_b[j + 1], side_b[j]))
            j += 1
    tris.append((side_a[-2], side_a[-1], side_b[-2]))
    return np.asarray(tris, np.int32)


@dataclass
class MeshTopology:
    """Triangles and ordered contours of the 468-point mesh (vertex indices). Treat as read-only: one
    instance is shared by every face (plain lists so that it satisfies swap_mesh's MeshTopology protocol)."""

    triangles: np.ndarray  # (T, 3) int32, T = 852: the surface without mouth and eye openings
    face_oval: list[int]
    left_eye: list[int]  # subject's left = image-right
    right_eye: list[int]  # subject's right = image-left
    left_brow: list[int]
    right_brow: list[int]
    lips_outer: list[int]
    lips_inner: list[int]
    edges: dict[str, list[Edge]] = field(repr=False)  # every edge set of the file, by its name

    @classmethod
    def from_connections_file(cls, path: str | os.PathLike[str]) -> MeshTopology:
        sets = read_edge_sets(path)
        required = ("TESSELATION", "FACE_OVAL", "LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW")
        missing = [f"FACEMESH_{n}" for n in required if f"FACEMESH_{n}" not in sets]
        if missing:
            raise BadInputError(f"{path}: not MediaPipe's face_mesh_connections.py (missing {', '.join(missing)})")
        tessellation = sets["FACEMESH_TESSELATION"]
        surface = {_key(a, b) for a, b in tessellation}
        try:
            lips = _chains(sets["FACEMESH_LIPS"])
            if len(lips) != 2:
                raise ValueError(f"lips: expected an outer and an inner loop, found {len(lips)}")
            # The inner loop is the one on the hole: its edges bound one triangle each.
            triangles = triangles_from_edges(tessellation)
            uses = _edge_uses(triangles)
            inner, outer = sorted(lips, key=lambda loop: _mean_use(loop, uses))
            return cls(
                triangles=triangles,
                face_oval=_closed_loop(sets["FACEMESH_FACE_OVAL"]),
                left_eye=_closed_loop(sets["FACEMESH_LEFT_EYE"]),
                right_eye=_closed_loop(sets["FACEMESH_RIGHT_EYE"]),
                left_brow=_join_chains(sets["FACEMESH_LEFT_EYEBROW"], surface),
                right_brow=_join_chains(sets["FACEMESH_RIGHT_EYEBROW"], surface),
                lips_outer=outer,
                lips_inner=inner,
                edges=sets,
            )
        except (KeyError, ValueError) as exc:
            raise BadInputError(f"{path}: unexpected face mesh connections ({exc})") from None

    def triangles_within(self, vertices: Sequence[int]) -> np.ndarray:
        """Triangles whose three vertices all belong to `vertices` (e.g. inside the mouth opening)."""
        members = np.isin(self.triangles, np.asarray(vertices)).all(axis=1)
        return self.triangles[members]

    @property
    def mouth_triangles(self) -> np.ndarray:
        """Triangles inside the mouth opening: none in MediaPipe's tessellation (the mouth is a hole)."""
        return self.triangles_within(self.lips_inner)

    @property
    def eye_triangles(self) -> np.ndarray:
        return np.concatenate([self.triangles_within(self.left_eye), self.triangles_within(self.right_eye)])

    def hole_fill(self) -> dict[str, np.ndarray]:
        """Triangles closing the mouth and eye openings (18 + 14 + 14): the canonical model's 898 with `triangles`."""
        return {
            "mouth": fill_loop(self.lips_inner, INNER_LIP_CORNERS),
            "right_eye": fill_loop(self.right_eye, IMAGE_LEFT_EYE_CORNERS),
            "left_eye": fill_loop(self.left_eye, IMAGE_RIGHT_EYE_CORNERS),
        }

    def closed_triangles(self) -> np.ndarray:
        """(898, 3): the surface with its mouth and eye openings filled."""
        return np.concatenate([self.triangles, *self.hole_fill().values()])

    def polygon(self, points: FloatArray, loop: Sequence[int]) -> FloatArray:
        """(len(loop), 2) image points of a contour, ready for cv2.fillPoly after rounding."""
        return np.asarray(points)[list(loop), :2]


def _edge_uses(triangles: np.ndarray) -> Counter[Edge]:
    return Counter(_key(int(a), int(b)) for t in triangles for a, b in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))


def _mean_use(loop: list[int], uses: Counter[Edge]) -> float:
    return float(np.mean([uses[_key(loop[i], loop[(i + 1) % len(loop)])] for i in range(len(loop))]))
