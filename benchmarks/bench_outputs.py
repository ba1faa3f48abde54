#!/usr/bin/env python
"""What step 12's guarantees cost: the pixel digest every prediction records, and the ledger entry
every file medtl writes into an output folder gets.

Side by side, in one process, as a user would otherwise do without them:

* ``digest``: :meth:`medtl.io.Image.digest` of a 512² float32 radiograph (what ``medtl predict``
  adds per image so that ``medtl report`` can tell a changed image) against nothing, and against
  the read it rides on (``pydicom.dcmread`` + ``pixel_array`` of the same image as DICOM);
* ``write``: a 20 kB file (a saliency PNG's size) written atomically into a held output folder
  (recorded in ``.medtl-files``) against the same atomic write outside any output, and against a
  plain ``open().write()``.

Medians of ``--repeats`` rounds of ``--n`` operations each; the result is printed as markdown.
Example::

    python benchmarks/bench_outputs.py             # n=500, 5 repeats
    python benchmarks/bench_outputs.py --n 50 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, n: int, repeats: int) -> float:
    rounds = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            fn(r, i)
        rounds.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(rounds)


def bench_digest(work: Path, n: int, repeats: int) -> dict[str, float]:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from medtl.io import Image

    pixels = (np.random.default_rng(0).random((512, 512)) * 4095).astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 512, 512, 16, 12, 11
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = pixels.tobytes()
    path = work / "IM1.dcm"
    ds.save_as(path, enforce_file_format=True)
    img = Image(pixels.astype(np.float32), np.eye(4))
    return {
        "read (pydicom, pixels)": _median_ms(lambda r, i: pydicom.dcmread(path).pixel_array, n, repeats),
        "pixel digest": _median_ms(lambda r, i: img.digest(), n, repeats),
    }


def bench_write(work: Path, n: int, repeats: int) -> dict[str, float]:
    from medtl.files import write_bytes
    from medtl.outputs import output_folder

    data = os.urandom(20_000)

    def plain(r: int, i: int) -> None:
        target = work / "plain" / f"{r}-{i}.png"
        target.parent.mkdir(exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(data)

    out = {"open().write()": _median_ms(plain, n, repeats),
           "atomic, outside an output": _median_ms(lambda r, i: write_bytes(work / "atomic" / f"{r}-{i}.png", data),
                                                   n, repeats)}  # fmt: skip
    with output_folder(work / "held", "predict") as held:
        out["atomic, recorded in the ledger"] = _median_ms(
            lambda r, i: write_bytes(held / "maps" / f"{r}-{i}.png", data), n, repeats)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="operations per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (the median is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medtl-bench-outputs-") as tmp:
        work = Path(tmp)
        digest = bench_digest(work, args.n, args.repeats)
        write = bench_write(work, args.n, args.repeats)
    print("| operation | ms each (median) | ratio |\n|---|---|---|")
    base = digest["read (pydicom, pixels)"]
    for name, ms in digest.items():
        print(f"| {name} | {ms:.3f} | {ms / base:.2f}× the read |")
    base = write["atomic, outside an output"]
    for name, ms in write.items():
        print(f"| write 20 kB: {name} | {ms:.3f} | {ms / base:.2f}× unrecorded |")


if __name__ == "__main__":
    main()
