"""Few-shot classification on frozen embeddings (1–10 labelled examples per class).

:class:`PrototypeClassifier` (Snell et al. 2017) averages each class's normalised embeddings;
k-nearest neighbours is scikit-learn's ``KNeighborsClassifier`` on the same embeddings
(:func:`knn`). :func:`embed` turns images into embeddings with any medtl model.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["embed", "PrototypeClassifier", "knn"]


@torch.no_grad()
def embed(model, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """L2-normalised ``model.forward_features`` of (N, C, *spatial) images → (N, F)."""
    model.eval()
    feats = [model.forward_features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    out = torch.cat(feats)
    return torch.nn.functional.normalize(out, dim=1).numpy()


class PrototypeClassifier:
    """Nearest class mean in cosine similarity, with softmax probabilities.

    >>> clf = PrototypeClassifier().fit(np.array([[1, 0], [0.9, 0.1], [0, 1]]), np.array([0, 0, 1]))
    >>> clf.predict(np.array([[0.8, 0.2], [0.1, 0.9]])).tolist()
    [0, 1]
    """

    def __init__(self, temperature: float = 0.1):
        self.temperature = temperature

    def fit(self, x: np.ndarray, y: np.ndarray) -> PrototypeClassifier:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.classes_ = np.unique(y)
        protos = np.stack([x[y == c].mean(0) for c in self.classes_])
        self.prototypes_ = protos / np.linalg.norm(protos, axis=1, keepdims=True)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        logits = x @ self.prototypes_.T / self.temperature
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(1)]


def knn(x: np.ndarray, y: np.ndarray, k: int = 3):
    """A fitted scikit-learn k-NN (cosine distance) on support embeddings."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=min(k, len(y)), metric="cosine").fit(x, y)
