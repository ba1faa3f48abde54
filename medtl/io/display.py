"""Display mapping: DICOM window centre/width (VOI LUT functions) to [0, 1].

>>> import numpy as np
>>> [round(float(v), 3) for v in window(np.array([-1000.0, 40.0, 1000.0]), center=40, width=400)]
[0.0, 0.501, 1.0]
"""

from __future__ import annotations

import numpy as np

__all__ = ["window", "WINDOWS"]

#: Common CT windows in HU as (center, width).
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "soft_tissue": (40.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def window(array: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map modality values to [0, 1] as DICOM PS3.3 C.11.2.1.2 defines the VOI LUT functions.

    Args:
        array: values in modality units (HU for CT).
        center, width: Window Center and Window Width (``width`` >= 1, or > 0 for LINEAR_EXACT).
        function: ``LINEAR`` (DICOM default), ``LINEAR_EXACT`` or ``SIGMOID``.

    Returns:
        float32 array of the same shape, 0 = black, 1 = white.
    """
    x = np.asarray(array, dtype=np.float32)
    fn = function.upper()
    if fn == "LINEAR":
        if width < 1:
            raise ValueError(f"window width must be >= 1 for LINEAR, got {width}")
        out = ((x - (center - 0.5)) / (width - 1.0)) + 0.5
    elif fn == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        out = (x - center) / width + 0.5
    elif fn == "SIGMOID":
        if width <= 0:
            raise ValueError(f"window width must be > 0, got {width}")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    else:
        raise ValueError(f"unknown VOI LUT function '{function}'; use LINEAR, LINEAR_EXACT or SIGMOID")
    return np.clip(out, 0.0, 1.0).astype(np.float32)
