"""What a run's training images were (colour or grey, DICOM modality, 2D or 3D), and the rules
that call a new image unfamiliar from that alone, whatever its embedding distance says.

The out-of-distribution score (:mod:`medtl.predict.ood`) is a distance in the network's
embedding, and a photograph or a CT slice can land near the training images by chance: a
photograph of a cameraman scored as familiar, and three of ten CT slices given to a radiograph
run were not flagged (issue 26). Some mismatches need no statistics, so they are decided by rule:

* **colour**: a colour image (real chroma, :func:`medtl.io.colour.colour_mode`; grey stored as RGB
  is grey) given to a run that saw (almost) no colour image, or a grey one to a run that saw
  (almost) only colour. "Almost": fewer than :data:`RARE` of the probed training images.
* **modality**: an image whose DICOM Modality is known and was not among the training images'
  (CT given to a CR/DX run). A run whose training images carried no modality (PNG, NIfTI) has
  no modality rule. CR and DX count as different: their detectors and processing differ.
* **dimensionality**: a volume given to a 2D run or a slice to a 3D run (``medtl predict``
  already refuses these before the network: they are errors, not predictions).

Training writes ``familiar.json`` in the run (:func:`probe_training`); a run trained before it
existed has none, and then no rule applies (predict says so in a note).

>>> record = {"schema": SCHEMA, "dims": 2, "probed": 40, "images": 40,
...           "colour": {"gray": 40}, "modalities": {"DX": 36, "CR": 4}}
>>> unfamiliar_reasons(record, {"colour": "rgb", "modality": "", "dims": 2})
['colour image; the run was trained on grey images']
>>> unfamiliar_reasons(record, {"colour": "gray", "modality": "CT", "dims": 2})
['modality CT not seen in training (CR, DX)']
>>> unfamiliar_reasons(record, {"colour": "gray-rgb", "modality": "DX", "dims": 2})
[]
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, MedtlError
from .channels import MAX_PROBED
from .manifest import Manifest
from .npz import NPZ_SCHEME, load_npz_item

__all__ = ["FAMILIAR_FILE", "SCHEMA", "RARE", "probe_training", "input_facts", "unfamiliar_reasons",
           "write_familiar", "read_familiar", "familiar_text"]  # fmt: skip

#: The file in a run directory that records what its training images were.
FAMILIAR_FILE = "familiar.json"
SCHEMA = "medtl.familiar/1"
#: A colour mode seen in fewer than this share of the training images counts as not seen: one
#: stray colour scan among a thousand radiographs does not make colour photographs familiar.
RARE = 0.01
_GREY = ("gray", "gray-rgb")


def _modality(path: str) -> str:
    """The DICOM Modality of a file or of the first DICOM file under a folder; ``""`` for other
    formats."""
    from ..io.dicom import dicom_files_under, read_dataset
    from ..io.sniff import sniff

    first = path
    if os.path.isdir(path):
        files = dicom_files_under(path)
        if not files:
            return ""
        first = files[0]
    if sniff(first) != "dicom":
        return ""
    return str(read_dataset(first, header_only=True).get("Modality", "") or "").strip().upper()


def _probe(path: str, series: str | None) -> tuple[str, str]:
    """``(colour mode, modality)`` of one manifest path, read as cheaply as that allows."""
    from ..io.colour import image_colour, probe_colour

    if path.startswith(NPZ_SCHEME):
        return image_colour(load_npz_item(path)), ""
    return probe_colour(path, series=series), _modality(path)


def probe_training(manifest: Manifest, indices: Sequence[int], dims: int, *, progress: bool = False) -> dict[str, Any]:
    """The record of what a run's training images (``manifest.records[indices]``) were: colour
    modes and DICOM modalities counted over up to :data:`~medtl.data.channels.MAX_PROBED` of them
    spread evenly, and the run's dimensionality ``dims``. An unreadable image counts as such
    (caching reports it with its reason).

    >>> from medtl.data.manifest import Record
    >>> m = Manifest([Record("npz://x#train/0", (0.0,), "p")], ("label",), (), "x")
    >>> probe_training(m, [], 2)["probed"]
    0
    """
    chosen = list(indices)
    if len(chosen) > MAX_PROBED:
        step = len(chosen) / MAX_PROBED
        chosen = [chosen[int(k * step)] for k in range(MAX_PROBED)]
    from ..progress import track

    steps = track(chosen, "training inputs", "image", enabled=progress, leave=False)
    colours: Counter[str] = Counter()
    modalities: Counter[str] = Counter()
    for i in steps:
        rec = manifest.records[i]
        try:
            colour, modality = _probe(rec.path, rec.series)
        except (MedtlError, OSError):
            colours["unreadable"] += 1
            continue
        colours[colour] += 1
        modalities[modality or "none"] += 1
    return {"schema": SCHEMA, "dims": int(dims), "images": len(list(indices)), "probed": len(chosen),
            "colour": dict(sorted(colours.items())), "modalities": dict(sorted(modalities.items()))}  # fmt: skip


def input_facts(img) -> dict[str, Any]:
    """What the rules look at in one loaded :class:`~medtl.io.Image`: its colour mode, DICOM
    modality (``""`` when it has none) and number of spatial dimensions.

    >>> import numpy as np
    >>> from medtl.io import Image
    >>> input_facts(Image(np.zeros((3, 4, 4)), np.eye(4), {"channel_axis": 0, "colour": "rgb"}))
    {'colour': 'rgb', 'modality': '', 'dims': 2}
    """
    from ..io.colour import image_colour

    return {"colour": image_colour(img), "modality": str(img.meta.get("modality") or "").strip().upper(),
            "dims": int(img.ndim)}  # fmt: skip


def _shares(record: dict[str, Any]) -> tuple[int, int]:
    """``(colour images, grey images)`` among the probed training images."""
    counts = record.get("colour") or {}
    return int(counts.get("rgb", 0)), sum(int(counts.get(k, 0)) for k in _GREY)


def unfamiliar_reasons(record: dict[str, Any] | None, facts: dict[str, Any] | None) -> list[str]:
    """Why an image with ``facts`` (:func:`input_facts`) is unlike the training images of a run
    whose ``record`` is given, by rule; empty when no rule applies, or when either is ``None``.
    """
    if not record or not facts:
        return []
    reasons = []
    dims, seen = facts.get("dims"), record.get("dims")
    if dims and seen and int(dims) != int(seen):
        reasons.append(f"{'3D volume' if int(dims) == 3 else '2D image'}; the run was trained on "
                       f"{'3D volumes' if int(seen) == 3 else '2D images'}")  # fmt: skip
    colour, grey = _shares(record)
    total = colour + grey
    mode = facts.get("colour")
    if total and mode == "rgb" and colour < RARE * total:
        reasons.append("colour image; the run was trained on grey images"
                       + (f" (only {colour} of {total} probed in colour)" if colour else ""))  # fmt: skip
    elif total and mode in _GREY and grey < RARE * total:
        reasons.append("grey image; the run was trained on colour images"
                       + (f" (only {grey} of {total} probed in grey)" if grey else ""))  # fmt: skip
    seen_modalities = sorted(m for m in (record.get("modalities") or {}) if m != "none")
    modality = facts.get("modality") or ""
    if modality and seen_modalities and modality not in seen_modalities:
        reasons.append(f"modality {modality} not seen in training ({', '.join(seen_modalities)})")
    return reasons


def familiar_text(record: dict[str, Any] | None) -> str:
    """The rules a run's record makes, as one sentence for model cards and reports.

    >>> familiar_text({"dims": 2, "probed": 40, "colour": {"gray": 40}, "modalities": {"DX": 40}})
    'flagged by rule whatever the score: a colour image (the run saw 0 of 40 training images in colour), a DICOM modality other than DX, a 3D volume'
    >>> familiar_text(None)
    'no rule flags: the run does not record what its training images were (trained before medtl did)'
    """
    if not record:
        return "no rule flags: the run does not record what its training images were (trained before medtl did)"
    colour, grey = _shares(record)
    total = colour + grey
    rules = []
    if total and colour < RARE * total:
        rules.append(f"a colour image (the run saw {colour} of {total} training images in colour)")
    elif total and grey < RARE * total:
        rules.append(f"a grey image (the run saw {grey} of {total} training images in grey)")
    seen = sorted(m for m in (record.get("modalities") or {}) if m != "none")
    if seen:
        rules.append(f"a DICOM modality other than {' or '.join(seen)}")
    rules.append("a 3D volume" if int(record.get("dims", 2)) == 2 else "a 2D image")
    return "flagged by rule whatever the score: " + ", ".join(rules)


def write_familiar(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``run_dir/familiar.json`` atomically.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_familiar(folder, {"schema": SCHEMA, "dims": 2, "colour": {"gray": 3}, "modalities": {"DX": 3}})
    >>> read_familiar(folder)["modalities"], read_familiar(tempfile.mkdtemp())
    ({'DX': 3}, None)
    """
    from ..files import write_json

    return write_json(Path(run_dir) / FAMILIAR_FILE, record)


def read_familiar(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's record, or ``None`` for a run trained before medtl wrote it.

    Raises:
        ConfigError: the file exists but is not a record.
    """
    path = Path(run_dir) / FAMILIAR_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(path, f"unreadable record of the training images ({exc})") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise ConfigError(path, f"is not a record of the training images ({SCHEMA})")
    return record
