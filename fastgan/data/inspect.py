"""``inspect_dataset``: what a dataset zip or image folder holds, and whether training can read it as it is."""
from __future__ import annotations

import os
from typing import Union

from .layout import BadImage, ImageSource, content_sha256, label_array, probe, shape_problem


def inspect_dataset(path: Union[str, os.PathLike], *, sha256: bool = True) -> dict:
    """Counts, image shapes and modes (from every image's header), label statistics, the content sha256, and the
    problems that keep training from reading the dataset as it is (``trainable`` is True when there are none)."""
    from PIL import Image

    src = ImageSource(path)
    combos: dict[tuple[int, int, str], list] = {}
    unreadable = []
    for name in src.names:
        try:
            w, h, mode = probe(src, name)
        except BadImage as exc:
            unreadable.append([name, exc.reason])
            continue
        entry = combos.setdefault((w, h, mode), [0, name])
        entry[0] += 1
    shapes: dict[tuple[int, int, int], int] = {}
    modes: dict[str, int] = {}
    for (w, h, mode), (count, _) in combos.items():
        key = (Image.getmodebands(mode), h, w)
        shapes[key] = shapes.get(key, 0) + count
        modes[mode] = modes.get(mode, 0) + count

    problems = []
    if not src.names:
        problems.append("no images")
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable file(s) (e.g. {unreadable[0][0]}: {unreadable[0][1]})")
    for (w, h, mode), (count, first) in sorted(combos.items(), key=lambda kv: -kv[1][0]):
        why = shape_problem(w, h, mode)
        if why:
            problems.append(f"{count} image(s): {why} (e.g. {first})")
    if len(combos) > 1:
        problems.append(f"{len(combos)} different sizes/modes; training needs one")

    labels: dict = {"present": False, "kind": "none", "label_dim": 0, "labelled": 0, "missing": 0}
    meta = None
    try:
        meta = src.metadata()
        table = src.labels()
    except ValueError as exc:
        problems.append(str(exc))
        table = None
    if table is not None:
        have = [n for n in src.names if n in table]
        labels.update(present=True, labelled=len(have), missing=len(src.names) - len(have))
        if labels["missing"]:
            problems.append(f"{labels['missing']} of {len(src.names)} images have no label")
        try:
            arr, kind = label_array([table[n] for n in have], where="dataset.json")
            labels.update(kind=kind, label_dim=int(arr.shape[1]))
            if kind == "class":
                counts: dict[str, int] = {}
                for n in have:
                    counts[str(table[n])] = counts.get(str(table[n]), 0) + 1
                labels["class_counts"] = dict(sorted(counts.items(), key=lambda kv: int(kv[0])))
        except ValueError as exc:
            problems.append(str(exc))
    record = meta.get("fastgan") if isinstance(meta, dict) else None
    return {
        "path": str(src.path),
        "kind": "zip" if src.is_zip else "folder",
        "num_images": len(src.names) - len(unreadable),
        "num_files": len(src.names),
        "shapes": [{"shape": list(k), "count": v} for k, v in sorted(shapes.items(), key=lambda kv: (-kv[1], kv[0]))],
        "modes": dict(sorted(modes.items())),
        "unreadable": unreadable,
        "labels": labels,
        "made_by": record.get("kind") if isinstance(record, dict) else None,
        "sha256": content_sha256(src.path) if sha256 else None,
        "trainable": not problems,
        "problems": problems,
    }


def format_report(info: dict) -> str:
    """``inspect_dataset``'s result as text."""
    lines = [f"{info['path']} ({info['kind']}"
             + (f", made by fastgan: {info['made_by']}" if info.get("made_by") else "") + ")",
             f"  images:   {info['num_images']}" + (f" of {info['num_files']} files" if info["unreadable"] else "")]
    for s in info["shapes"]:
        c, h, w = s["shape"]
        lines.append(f"  shape:    {c}x{h}x{w} (CxHxW)  {s['count']} image(s)")
    lines.append("  modes:    " + (", ".join(f"{m} {k}" for m, k in info["modes"].items()) or "-"))
    lab = info["labels"]
    if not lab["present"]:
        lines.append("  labels:   none")
    else:
        lines.append(f"  labels:   {lab['kind']}, label_dim {lab['label_dim']}, {lab['labelled']} labelled, "
                     f"{lab['missing']} missing")
        if lab.get("class_counts"):
            lines.append("  classes:  " + ", ".join(f"{k}: {v}" for k, v in lab["class_counts"].items()))
    for name, reason in info["unreadable"][:10]:
        lines.append(f"  unreadable: {name}: {reason}")
    if len(info["unreadable"]) > 10:
        lines.append(f"  ... and {len(info['unreadable']) - 10} more unreadable files")
    if info["sha256"]:
        lines.append(f"  sha256:   {info['sha256']}")
    if info["trainable"]:
        lines.append("  ready for training")
    else:
        lines.append("  not ready for training:")
        lines.extend(f"    - {p}" for p in info["problems"])
        lines.append("  fix: fastgan data make --source PATH --dest OUT.zip --resolution R --transform center-crop "
                     "[--on-error skip] [--labels drop]")
    return "\n".join(lines)
