"""Check medtl's readers on real DICOM from ../shared/data (not shipped with medtl).

1. The GE 3D T1 MP-RAGE series (130 oblique slices) against dcm2niix's reference conversion:
   every voxel of ours is mapped through both affines to the reference grid and the values
   compared, so a geometry error of a single voxel shows.
2. The GE diffusion series (14 files: 7 volumes x 2 oblique slices, b = 0 then 6 directions at
   b = 1000) loaded whole with ``volume="all"``: every voxel of every volume against dcm2niix's 4D
   reference the same way, the volume order, and the b-values against its .bval file.
3. Every file of pydicom's external test store: loads, or fails with a typed, named error.

Usage: python benchmarks/validate_real_dicom.py [--data ../shared/data/dicom]
Prints markdown tables; exits 1 if the geometry check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _compare_grid(affine: np.ndarray, array: np.ndarray, ref_affine: np.ndarray, ref_data: np.ndarray) -> dict:
    """Map every voxel of ours to the reference grid through both affines; compare places and values."""
    # our index → world → reference index; must land on integer voxels of the same grid
    to_ref = np.linalg.inv(ref_affine) @ affine
    idx = np.indices(array.shape).reshape(3, -1)
    mapped = to_ref[:3, :3] @ idx + to_ref[:3, 3:4]
    off_grid = float(np.abs(mapped - np.round(mapped)).max())
    r = np.round(mapped).astype(int)
    inside = np.all((r >= 0) & (r < np.array(ref_data.shape)[:, None]), axis=0)
    ours = array.reshape(-1)[inside] if array.flags.c_contiguous else array[tuple(idx[:, inside])]
    theirs = ref_data[tuple(r[:, inside])]
    # world distance between our voxel centres and dcm2niix's, in mm (nibabel affines are float32)
    world_ours = affine[:3, :3] @ idx + affine[:3, 3:4]
    world_ref = ref_affine[:3, :3] @ np.round(mapped) + ref_affine[:3, 3:4]
    return {
        "voxels_compared": int(inside.sum()),
        "max_index_offset": off_grid,
        "max_world_error_mm": float(np.abs(world_ours - world_ref).max()),
        "values_equal": bool(np.array_equal(ours, theirs)),
        "max_abs_value_diff": float(np.abs(ours.astype(np.float64) - theirs).max()) if inside.any() else float("nan"),
    }


def check_against_dcm2niix(series: Path, reference: Path) -> dict:
    import nibabel as nib

    from medtl.io import load_image

    t0 = time.perf_counter()
    img = load_image(series)
    seconds = time.perf_counter() - t0
    ref = nib.load(reference)
    ref_data = np.asarray(ref.dataobj, dtype=np.float32)
    return {
        "series": series.name,
        "shape": "x".join(map(str, img.array.shape)),
        "spacing_mm": "x".join(f"{s:g}" for s in img.spacing),
        **_compare_grid(img.affine, np.ascontiguousarray(img.array), ref.affine, ref_data),
        "load_s": seconds,
    }


def check_4d_against_dcm2niix(series: Path, reference: Path, bval: Path) -> dict:
    """A 4D series loaded with volume="all": every volume against the same volume of the reference."""
    import nibabel as nib

    from medtl.io import load_image

    t0 = time.perf_counter()
    img = load_image(series, volume="all")
    seconds = time.perf_counter() - t0
    ref = nib.load(reference)
    ref_data = np.asarray(ref.dataobj, dtype=np.float32)
    per_volume = [
        _compare_grid(img.affine, np.ascontiguousarray(img.array[v]), ref.affine, ref_data[..., v])
        for v in range(min(img.array.shape[0], ref_data.shape[3]))
    ]
    ref_b = [float(b) for b in bval.read_text().split()]
    ours_b = [float(b) for b in img.meta.get("b_values", [])]
    return {
        "series": series.name,
        "shape": "x".join(map(str, img.array.shape)),
        "volumes_ours_ref": f"{img.meta.get('n_volumes')}/{ref_data.shape[3]}",
        "axis": f"{img.meta.get('volume_axis')} by {img.meta.get('volume_key')}",
        "spacing_mm": "x".join(f"{s:g}" for s in img.spacing),
        "voxels_compared": sum(p["voxels_compared"] for p in per_volume),
        "max_index_offset": max(p["max_index_offset"] for p in per_volume),
        "max_world_error_mm": max(p["max_world_error_mm"] for p in per_volume),
        "values_equal": all(p["values_equal"] for p in per_volume) and img.array.shape[0] == ref_data.shape[3],
        "b_values": " ".join(f"{b:g}" for b in ours_b),
        "b_values_equal": ours_b == ref_b,
        "load_s": seconds,
    }


def _table(res: dict) -> None:
    print("| " + " | ".join(res) + " |")
    print("|" + "---|" * len(res))
    print("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in res.values()) + " |")


def survey(folder: Path) -> list[tuple[str, str, str]]:
    from medtl.errors import MedtlError
    from medtl.io import load_image

    rows = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = load_image(path)
            flags = ",".join(img.meta.get("flags", []))
            rows.append((path.name, "ok", f"{img.meta.get('modality', '?')} {tuple(img.array.shape)} {flags}".strip()))
        except MedtlError as exc:
            rows.append((path.name, type(exc).__name__, exc.reason[:110]))
        except Exception as exc:  # noqa: BLE001 - a crash is what this survey looks for
            rows.append((path.name, f"CRASH {type(exc).__name__}", str(exc)[:110]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"
    parser.add_argument("--data", type=Path, default=default, help="folder holding dcm_qa_ge/ and pydicom_data/")
    args = parser.parse_args()
    ge = args.data / "dcm_qa_ge"
    if not ge.exists():
        print(f"{args.data}: real DICOM data not found; nothing to validate (see ../shared/data/README.md)")
        return 0
    res = check_against_dcm2niix(
        ge / "In" / "05_3D_Ax_T1_MP_RAGE_R22", ge / "Ref" / "3D_Ax_T1_MP-RAGE_R22_dcm2niix.nii.gz"
    )
    print("## Geometry against dcm2niix (GE 3D T1, oblique)\n")
    _table(res)
    dwi = check_4d_against_dcm2niix(
        ge / "In" / "01_Ax_DWI_TENSOR_R2", ge / "Ref" / "Ax_DWI_TENSOR_R2_1.nii", ge / "Ref" / "Ax_DWI_TENSOR_R2_1.bval"
    )
    print("\n## 4D against dcm2niix (GE diffusion, oblique, volume='all')\n")
    _table(dwi)
    store = args.data / "pydicom_data" / "data_store" / "data"
    if store.exists():
        rows = survey(store)
        print(f"\n## pydicom external test store: {sum(r[1] == 'ok' for r in rows)} of {len(rows)} load\n")
        print("| file | result | detail |\n|---|---|---|")
        for name, status, detail in rows:
            print(f"| {name} | {status} | {detail} |")
        if any(r[1].startswith("CRASH") for r in rows):
            return 1
    ok = all(
        r["values_equal"] and r["max_index_offset"] < 1e-3 and r["max_world_error_mm"] < 0.01 for r in (res, dwi)
    )
    return 0 if ok and dwi["b_values_equal"] else 1


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(main())
