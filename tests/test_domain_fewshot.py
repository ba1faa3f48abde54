"""AdaBN, gradient reversal, and few-shot classifiers."""

import numpy as np
import torch

from medtl.models import create
from medtl.train.domain import DomainClassifier, GradientReversal, adabn
from medtl.train.fewshot import PrototypeClassifier, embed, knn


def test_adabn_sets_statistics_to_the_target_data():
    torch.manual_seed(0)
    model = create("resnet10", num_classes=2)
    batches = [torch.randn(4, 1, 32, 32) * 3 + 5 for _ in range(3)]  # a "new scanner": shifted, scaled
    captured = []
    hook = model.encoder.bn1.register_forward_hook(lambda m, i, o: captured.append(i[0].detach()))
    adabn(model, batches)
    hook.remove()
    x = torch.cat(captured)  # what the first BatchNorm saw, from the (fixed) first convolution
    torch.testing.assert_close(model.encoder.bn1.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    weights_before = model.encoder.conv1.weight.clone()
    adabn(model, batches)
    assert torch.equal(model.encoder.conv1.weight, weights_before) and not model.training


def test_gradient_reversal_flips_the_gradient():
    x = torch.ones(3, requires_grad=True)
    (GradientReversal(0.5)(x) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.5, -1.0, -1.5]))
    assert DomainClassifier(16, 3)(torch.randn(2, 16)).shape == (2, 3)


def test_prototypes_and_knn_on_separable_embeddings():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 5
    support = np.concatenate([c + rng.normal(0, 0.3, (2, 4)) for c in centres])  # 2 shots per class
    ys = np.repeat([0, 1, 2], 2)
    query = np.concatenate([c + rng.normal(0, 0.3, (20, 4)) for c in centres])
    yq = np.repeat([0, 1, 2], 20)
    assert (PrototypeClassifier().fit(support, ys).predict(query) == yq).mean() == 1.0
    assert (knn(support, ys, k=1).predict(query) == yq).mean() == 1.0


def test_embed_is_normalised():
    e = embed(create("efficientnet-lite0", "imagenet", num_classes=0), torch.randn(5, 1, 64, 64), batch_size=2)
    assert e.shape == (5, 1280)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
