"""Join the outputs of ``medtl predict --shard I/N`` (or of ``torchrun`` ranks) into one.

Every shard scanned the same inputs and numbered them the same way, so the merged files are the
shards' rows sorted by ``index``: byte for byte what one process would have written.

>>> import inspect
>>> list(inspect.signature(merge_outputs).parameters)
['shard_dirs', 'out_dir', 'overwrite']
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..csvcells import plain_cell
from ..errors import NoInputError, OutputError
from .folder import ERRORS, PREDICTIONS, SUMMARY, encode_csv

__all__ = ["merge_outputs"]


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        # read back as written, so encode_csv writes the very same bytes again
        rows = [[plain_cell(c) for c in row] for row in csv.reader(fh)]
    return (rows[0] if rows else []), rows[1:]


def merge_outputs(
    shard_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, overwrite: bool = False
) -> dict[str, Any]:
    """Merge finished shard outputs into ``out_dir`` (``predictions.csv``, ``errors.csv``,
    ``summary.json``, and the saliency maps).

    Raises:
        OutputError: a folder is not a finished ``medtl predict`` output; the shards come from
            different runs, inputs or options; a shard is missing or given twice; ``out_dir``
            breaks the output rule (:func:`medtl.outputs.output_folder`).
        NoInputError: no shard predicted anything.
    """
    from ..rundir import describe, mark_complete, output_folder, write_bytes, write_json

    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise OutputError(out_dir, "no shard folders to merge")
    summaries = []
    for d in dirs:
        found = describe(d) if d.is_dir() else None
        if not found or found.get("command") != "predict" or not (d / SUMMARY).is_file():
            raise OutputError(d, "is not a `medtl predict` output")
        if not found.get("complete"):
            raise OutputError(d, "is unfinished: finish it with `medtl predict ... --resume` first")
        summaries.append(json.loads((d / SUMMARY).read_text()))
    first = summaries[0]["job"]
    for d, s in zip(dirs, summaries, strict=True):
        job = s["job"]
        for key in ("run_weights", "run_decisions", "input", "input_fingerprint", "input_content", "inputs",
                    "batch_size", "columns", "saliency", "redact_paths", "key_scheme", "assess_unfamiliar"):  # fmt: skip
            if job.get(key) != first.get(key):
                raise OutputError(d, f"comes from a different job than {dirs[0]} ({key} differs): shards must share "
                                  "the run, the input folder and the options")  # fmt: skip
    count = first["shard"][1]
    seen = sorted(s["job"]["shard"][0] for s in summaries)
    if any(s["job"]["shard"][1] != count for s in summaries) or seen != list(range(count)):
        missing = sorted(set(range(count)) - set(seen))
        twice = sorted({i for i in seen if seen.count(i) > 1})
        raise OutputError(dirs[0], f"the shards of a split into {count} are needed once each"
                          + (f"; missing {', '.join(map(str, missing))}" if missing else "")
                          + (f"; given twice {', '.join(map(str, twice))}" if twice else ""))  # fmt: skip
    # written as `predict-merge` and finished as `predict` (what a report reads): a merge that failed
    # part-way (a full disk) is made again by the same command, and a finished one needs --overwrite
    with output_folder(out_dir, "predict-merge", inputs=dirs, overwrite=overwrite) as out:
        for name in (PREDICTIONS, ERRORS):
            header, rows = None, []
            for d in dirs:
                h, r = _read(d / name)
                if header is not None and h != header:
                    raise OutputError(d / name, "has other columns than the first shard's")
                header = h
                rows.extend(r)
            rows.sort(key=lambda r: (int(r[0]), r[header.index("stage")] == "saliency" if "stage" in header else 0))
            write_bytes(out / name, encode_csv([header, *rows]))
        for d in dirs:
            _copy_maps(d, out)
        counts = {k: sum(s["counts"][k] for s in summaries) for k in summaries[0]["counts"]}
        if not counts["predicted"]:
            raise NoInputError(None, f"none of the {summaries[0]['inputs']['inputs']} input(s) of the shards could be "
                               "predicted: the reasons are in their errors.csv; the merged output is left unfinished")  # fmt: skip
        summary = dict(summaries[0])
        summary.update(
            counts=counts,
            shard={"index": None, "count": count, "merged_from": [d.name for d in dirs]},
            timing={"seconds_per_shard": [s["timing"]["seconds"] for s in summaries],
                    "inputs_per_second_total": round(sum(s["timing"]["inputs_this_session"] for s in summaries)
                                                     / max(max(s["timing"]["seconds"] for s in summaries), 1e-9), 3)},
            job=dict(first, shard=[0, 1]),
        )  # fmt: skip
        summary["inputs"] = dict(summaries[0]["inputs"], in_this_shard=summaries[0]["inputs"]["inputs"])
        write_json(out / SUMMARY, summary)
        mark_complete(out, "predict", merged=count, **counts)
    return summary


def _copy_maps(shard: Path, out: Path) -> None:
    """A shard's saliency maps into the merged output, each recorded as the merge's own file."""
    from ..files import atomic_path

    if not (shard / "maps").is_dir():
        return
    for source in sorted((shard / "maps").rglob("*")):
        if source.is_file():
            with atomic_path(out / source.relative_to(shard)) as tmp:  # whole, recorded, or a WriteError
                shutil.copyfile(source, tmp)
