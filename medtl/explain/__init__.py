"""Step 7 · Saliency explanations that can be trusted.

* :mod:`~medtl.explain.methods` — Grad-CAM, Grad-CAM++, integrated gradients, SmoothGrad and
  occlusion on captum, 2D and 3D, one call: :func:`saliency`.
* :mod:`~medtl.explain.sanity` — cascading model-parameter randomization (Adebayo et al. 2018).
* :mod:`~medtl.explain.localization` — pointing game and IoU against lesion masks, patient CIs.
* :mod:`~medtl.explain.faithfulness` — deletion curves against random deletion orders.
* :mod:`~medtl.explain.explainer` — a run directory ready to explain (:class:`Explainer`).
* :mod:`~medtl.explain.run` — :func:`explain`, the workflow behind ``medtl explain``.

Importing it loads torch; captum and matplotlib load when a map is computed.

>>> from medtl.explain import METHODS
>>> METHODS
('gradcam', 'gradcam++', 'ig', 'smoothgrad', 'occlusion')
"""

from .explainer import Explainer
from .methods import METHODS, Settings, check_methods, saliency
from .run import collect_inputs, explain

__all__ = ["METHODS", "Settings", "check_methods", "saliency", "explain", "collect_inputs", "Explainer"]
