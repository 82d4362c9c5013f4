"""Review outputs of a batch: one contact sheet per identity and an HTML index of every item.

Written under `<output>/review/`, both atomically. The sheets label each thumbnail with its prompt
variables (or draft name), sweep values and seed, so a studio can scan a character's whole set.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from portraitforge.atomic import atomic_write_bytes
from portraitforge.batch.manifest import Manifest
from portraitforge.batch.spec import BatchItem, LoadedSpec
from portraitforge.imageio import encode_image

REVIEW_DIR = "review"
THUMB = 192
LABEL_LINES = 4
LINE_H = 14
MAX_COLUMNS = 6


def item_label(item: BatchItem, row: dict[str, Any] | None) -> list[str]:
    """Short lines under a thumbnail: variables / draft, sweep values, seed (and the seed actually used)."""
    lines = [f"{k}={v}" for k, v in item.labels.items() if k != "seed"]
    if item.seed is not None:
        used = row.get("seed_used") if row else None
        lines.append(f"seed {item.seed}" + (f" -> {used}" if used not in (None, item.seed) else ""))
    if row is not None and row["status"] != "done":
        lines.append(row["status"].upper())
    elif row is not None and row.get("quality_status") not in (None, "OK"):
        lines.append(str(row["quality_status"]))
    flag = best_of_flag(row)
    if flag:
        lines.insert(0, flag)  # first: the sheet cuts labels after LABEL_LINES lines
    return lines


def best_of_flag(row: dict[str, Any] | None) -> str:
    """'KEPT #1 (grader 0.612)' / 'not kept (#4)' for best-of-N candidates; '' otherwise or before ranking."""
    if row is None or row.get("candidate_rank") is None:
        return ""
    grader = row.get("grader_similarity")
    score = f" (grader {grader:.3f})" if grader is not None else ""
    if row.get("kept"):
        return f"KEPT #{row['candidate_rank'] + 1}{score}"
    return f"not kept (#{row['candidate_rank'] + 1}){score}"


def review_order(items: list[BatchItem], rows: dict[str, dict[str, Any]]) -> list[BatchItem]:
    """Plan order, except that each best-of-N group lists its candidates by rank (the kept ones first)."""
    first_seq: dict[str, int] = {}
    for it in items:
        if it.group is not None:
            first_seq.setdefault(it.group, it.seq)

    def key(it: BatchItem) -> tuple[int, int, int]:
        if it.group is None:
            return (it.seq, 0, 0)
        rank = rows.get(it.id, {}).get("candidate_rank")
        return (first_seq[it.group], 0 if rank is not None else 1, rank if rank is not None else it.seq)

    return sorted(items, key=key)


def _font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def contact_sheet(output_dir: Path, entries: list[tuple[BatchItem, dict[str, Any] | None]], title: str) -> Image.Image:
    columns = min(MAX_COLUMNS, max(1, len(entries)))
    rows = (len(entries) + columns - 1) // columns
    cell_h = THUMB + LABEL_LINES * LINE_H + 8
    header = 28
    sheet = Image.new("RGB", (columns * (THUMB + 8) + 8, header + rows * cell_h + 8), (28, 28, 30))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((8, 6), title, fill=(240, 240, 240), font=_font(16))
    for n, (item, row) in enumerate(entries):
        x = 8 + (n % columns) * (THUMB + 8)
        y = header + (n // columns) * cell_h
        path = output_dir / item.output_relpath
        if row is not None and row["status"] == "done" and path.is_file():
            with Image.open(path) as img:
                thumb = ImageOps.contain(img.convert("RGB"), (THUMB, THUMB))  # small drafts are enlarged too
            sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        else:
            draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), fill=(70, 40, 40))
        for i, line in enumerate(item_label(item, row)[:LABEL_LINES]):
            draw.text(
                (x, y + THUMB + 4 + i * LINE_H), _fit_text(draw, line, font, THUMB), fill=(220, 220, 220), font=font
            )
    return sheet


def _safe_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "identity"


def write_review(loaded: LoadedSpec, manifest: Manifest, items: list[BatchItem]) -> Path:
    """Contact sheets (`review/<identity>.jpg`) and `review/index.html`. Returns the index path."""
    output_dir = loaded.output_dir
    review_dir = output_dir / REVIEW_DIR
    rows = {r["id"]: r for r in manifest.rows(it.id for it in items)}
    items = review_order(items, rows)
    by_identity: dict[str, list[tuple[BatchItem, dict[str, Any] | None]]] = {}
    for it in items:
        by_identity.setdefault(it.identity.label, []).append((it, rows.get(it.id)))
    sheets: dict[str, str] = {}
    for label, entries in by_identity.items():
        done = sum(1 for _, r in entries if r is not None and r["status"] == "done")
        sheet = contact_sheet(output_dir, entries, f"{loaded.spec.name} - {label} ({done}/{len(entries)} done)")
        name = f"{_safe_name(label)}.jpg"
        atomic_write_bytes(review_dir / name, encode_image(np.asarray(sheet), "JPEG", jpeg_quality=88))
        sheets[label] = name
    index = review_dir / "index.html"
    atomic_write_bytes(index, _index_html(loaded, items, rows, sheets, review_dir).encode("utf-8"))
    return index


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _index_html(
    loaded: LoadedSpec,
    items: list[BatchItem],
    rows: dict[str, dict[str, Any]],
    sheets: dict[str, str],
    review_dir: Path,
) -> str:
    e = html.escape
    out_rel = Path(os.path.relpath(loaded.output_dir, review_dir))
    counts: dict[str, int] = {}
    for r in rows.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(loaded.spec.name)} - portraitforge batch</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 6px;"
        "vertical-align:top;text-align:left}th{background:#eee;position:sticky;top:0}"
        "img.t{width:128px;height:auto}.failed{background:#fde8e8}.LOW_QUALITY,.NO_FACE{background:#fff6dc}"
        "code{font-size:11px}.notkept img{opacity:.45}</style></head><body>",
        f"<h1>{e(loaded.spec.name)}</h1>",
        f"<p>spec <code>{e(str(loaded.path))}</code> &middot; mode {e(loaded.spec.mode)} &middot; "
        f"{len(items)} items &middot; " + ", ".join(f"{e(k)} {v}" for k, v in sorted(counts.items())) + "</p>",
        "<h2>Contact sheets</h2><p>"
        + " &middot; ".join(f"<a href='{e(name)}'>{e(label)}</a>" for label, name in sheets.items())
        + "</p>",
        "<h2>Items</h2><table><tr><th>image</th><th>id</th><th>identity</th><th>parameters</th><th>seed</th>"
        "<th>status</th><th>best-of</th><th>quality</th><th>identity dist.</th><th>seam</th><th>sharpness</th>"
        "<th>ms</th></tr>",
    ]
    for it in items:
        r = rows.get(it.id, {})
        status = r.get("status", "pending")
        href = (out_rel / it.output_relpath).as_posix()
        image = f"<a href='{e(href)}'><img class='t' loading='lazy' src='{e(href)}'></a>" if status == "done" else ""
        params = "<br>".join(e(f"{k}: {v}") for k, v in it.labels.items() if k != "seed")
        if it.prompt is not None:
            params = f"<b>{e(it.prompt)}</b><br>{params}"
        details = e(json.dumps(it.params.get("refine", {}), sort_keys=True))
        params += f"<details><summary>all parameters</summary><code>{details}</code></details>"
        seed = "" if it.seed is None else str(it.seed)
        if r.get("seed_used") not in (None, it.seed):
            seed += f" &rarr; {r['seed_used']}"
        quality = r.get("quality_status") or ""
        reason = f"<br><small>{e(r['reason'])}</small>" if r.get("reason") else ""
        flag = best_of_flag(r)
        row_class = f"{status} {quality}" + (" notkept" if flag.startswith("not") else "")
        parts.append(
            f"<tr class='{e(row_class)}'><td>{image}</td><td><code>{e(it.id8)}</code></td>"
            f"<td>{e(it.identity.label)}</td><td>{params}</td><td>{seed}</td><td>{e(status)}{reason}</td>"
            f"<td>{e(flag)}</td><td>{e(quality)}</td><td>{_fmt(r.get('identity_distance'))}</td>"
            f"<td>{_fmt(r.get('seam_score'))}</td>"
            f"<td>{_fmt(r.get('sharpness'), 1)}</td><td>{_fmt(r.get('duration_ms'), 0)}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "\n".join(parts)
