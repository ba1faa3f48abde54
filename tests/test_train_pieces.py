"""Strategies train exactly what they should; L2-SP starts at zero and grows."""

import pytest
import torch

from medtl.errors import ConfigError
from medtl.models import create
from medtl.train import L2SP, class_weights, configure_strategy, train_mode
from medtl.train.strategies import StrategyConfig


def _step(model, groups, steps=2):
    opt = torch.optim.SGD(groups, lr=0.1)
    train_mode(model)
    for _ in range(steps):
        x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "cfg, epoch, moving",
    [
        (StrategyConfig("linear_probe"), 0, {"head"}),
        (StrategyConfig("lpft", probe_epochs=2), 1, {"head"}),
        (StrategyConfig("lpft", probe_epochs=2), 2, "all"),
        (StrategyConfig("gradual", unfreeze_every=1), 1, {"head", "stage4"}),
        (StrategyConfig("full"), 0, "all"),
    ],
)
def test_each_strategy_trains_exactly_its_groups(cfg, epoch, moving):
    torch.manual_seed(0)
    model = create("resnet10", num_classes=2)
    groups = model.param_groups()
    before = _snapshot(model)
    _step(model, configure_strategy(model, cfg, epoch))
    after = _snapshot(model)
    names = {
        name: {n for n, p in model.named_parameters() if any(p is q for q in params)} for name, params in groups.items()
    }
    expect = set(groups) if moving == "all" else moving
    for group, pnames in names.items():
        for n in pnames:
            changed = not torch.equal(before[n], after[n])
            assert changed == (group in expect), f"{cfg.name}@{epoch}: {n} ({group}) changed={changed}"
    if moving != "all":  # frozen BatchNorm statistics are frozen too
        frozen_bn = [k for k in before if k.startswith("encoder.layer1") and k.endswith("running_mean")]
        assert frozen_bn and all(torch.equal(before[k], after[k]) for k in frozen_bn)


def test_layer_decay_gives_lower_rates_to_deeper_groups():
    model = create("resnet10", num_classes=2)
    groups = configure_strategy(model, StrategyConfig("full", lr=1.0, layer_decay=0.5))
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates["head"] == 1.0 and rates["stage4"] == 0.5 and rates["stem"] == 0.5**5


def test_unknown_strategy_suggests():
    with pytest.raises(ConfigError, match="did you mean 'lpft'"):
        StrategyConfig("lp-ft")


def test_l2sp_is_zero_at_start_and_grows_as_weights_move():
    torch.manual_seed(0)
    model = create("resnet10", num_classes=2)
    reg = L2SP(model, alpha=0.1, beta=0.0)
    assert reg(model).item() == 0.0
    values = []
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(reg(model).item())
    assert 0 < values[0] < values[-1]
    # it measures distance to the start, not to zero: equals the explicit sum
    enc = dict(model.encoder.named_parameters())
    manual = 0.5 * 0.1 * sum((enc[n] - getattr(reg, f"start_{i}")).pow(2).sum() for i, n in enumerate(reg._names))
    torch.testing.assert_close(reg(model), manual)


def test_class_weights_balanced():
    torch.testing.assert_close(class_weights([0, 0, 0, 1, 1, 2]), torch.tensor([6 / 9, 1.0, 2.0]))


def test_cutmix_pastes_one_box_and_reports_its_area():
    import torch

    from medtl.train.module import cutmix

    torch.manual_seed(0)
    x = torch.zeros(4, 1, 16, 16)
    x[2] = 1.0
    perm = torch.tensor([2, 0, 1, 3])
    mixed, lam = cutmix(x, perm, 0.6)
    pasted = mixed[0, 0] == 1.0
    rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
    # one solid rectangle whose area is exactly 1 - lam of the image
    assert pasted.sum().item() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert pasted.float().mean().item() == pytest.approx(1 - lam)
    assert torch.equal(mixed[3], x[3]) and 0.5 < lam < 0.7  # image 3 was paired with itself
    vol, lam3 = cutmix(torch.zeros(2, 1, 8, 8, 8), torch.tensor([1, 0]), 0.5)  # 3D works the same way
    assert vol.shape == (2, 1, 8, 8, 8) and 0 < lam3 < 1
