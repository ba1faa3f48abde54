"""Upstream checkpoint formats → MONAI state dicts, key by key.

Each format has a reader (the file → a flat ``{key: tensor}`` of upstream names) and a
converter (upstream names → the parameter names of the MONAI network the source's
:class:`~medtl.models.registry.BackboneSpec` builds). Converters map every key explicitly and
raise :class:`~medtl.errors.WeightsError` listing what is missing, unexpected or mis-shaped:
never a silent partial load. Files are read with ``torch.load(weights_only=True)``; the one
format published as a pickled whole model (TorchXRayVision) is read through an allow-list of
inert stand-in classes, so no code from the file runs (see :func:`_read_xrv_densenet`).

Formats and what they hold (evidence: the upstream repository and file named):

``torchvision-resnet``
    A flat state dict (``pytorch/vision`` ``torchvision/models/resnet.py``): ``conv1``, ``bn1``,
    ``layer{1-4}.{i}.{conv,bn}{1,2[,3]}``, ``layer{n}.0.downsample.{0,1}``, ``fc``. MONAI's
    ``ResNet`` uses the same names. Both put the stride of a bottleneck on its 3×3 ``conv2``
    (torchvision's "ResNet v1.5"; MONAI ``ResNetBottleneck`` likewise) and of a basic block on
    ``conv1``, so the mapping is the identity over that grammar.
``torchvision-densenet``
    A flat state dict (``torchvision/models/densenet.py``). The published files predate
    PyTorch's ban on dots in module names and use ``denselayerN.norm.1`` where the code says
    ``norm1``; both spellings are accepted. MONAI nests a dense layer's modules under
    ``.layers.`` and calls the classifier ``class_layers.out``.
``xrv-densenet``
    ``torch.save(model)`` of a whole ``torchxrayvision.models.DenseNet`` (``mlmed/torchxrayvision``
    ``scripts/train_utils.py`` saves ``torch.save(model, ...-best.pt)``; ``models.py`` loads it
    with ``savedmodel.state_dict()``): torchvision's DenseNet layout with one input channel, 18
    outputs and, depending on the xrv version that saved it, ``op_threshs`` (attribute or buffer)
    and a ``pathologies``/``targets`` list. Those travel as :data:`EXTRA_PREFIX` keys. The
    release files predate PyTorch 1.6 (xrv patches ``_non_persistent_buffers_set`` into them on
    load), so they are in the legacy non-zip container.
``medicalnet-resnet``
    ``{"state_dict": ...}`` saved from ``nn.DataParallel`` (``Tencent/MedicalNet`` ``train.py``,
    ``model.py``), so every key starts with ``module.``; the network is
    ``models/resnet.py``'s 3D ResNet with a ``conv_seg`` segmentation decoder, dropped when
    present (MONAI loads the published ``*_23dataset.pth`` strictly into a decoder-less ResNet
    after stripping ``module.``, which suggests those files no longer carry it).
    MedicalNet's ``layer3``/``layer4`` run at stride 1 with dilation 2/4; the weights are shaped
    as in a strided ResNet, so they would also load into MONAI's default one and silently compute
    something else. The sources' ``dilated_stages`` config builds the dilated network.
``radimagenet-resnet`` / ``radimagenet-densenet``
    See :func:`_radimagenet_resnet`: a torchvision backbone wrapped as
    ``Backbone.backbone = nn.Sequential(*children[:-1])``, so keys are ``backbone.<index>.*``.
    Established from example code, not from the (request-only) files themselves.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from ..errors import WeightsError

__all__ = ["read_checkpoint", "convert", "CONVERTERS", "READERS", "check_against", "EXTRA_PREFIX", "split_extras"]

Tensor = Any  # torch.Tensor, imported lazily
StateDict = dict[str, Tensor]
# keys that carry no learned state: BatchNorm's counter is rebuilt by the target network
_IGNORED_SUFFIXES = ("num_batches_tracked",)

#: Keys starting with this carry a checkpoint's non-weight metadata next to its tensors
#: (``medtl:op_threshs``, ``medtl:pathologies``). No module of these upstreams has a ``:`` in
#: its name, so they never collide with weights; :func:`convert` ignores them and
#: :func:`split_extras` separates them. They survive ``torch.save``/``weights_only`` loading.
EXTRA_PREFIX = "medtl:"


def split_extras(state: StateDict) -> tuple[StateDict, dict[str, Any]]:
    """``(weights, extras)``: extras keyed without :data:`EXTRA_PREFIX`.

    >>> split_extras({"fc.bias": 0, "medtl:pathologies": ["Edema"]})
    ({'fc.bias': 0}, {'pathologies': ['Edema']})
    """
    weights = {k: v for k, v in state.items() if not k.startswith(EXTRA_PREFIX)}
    extras = {k[len(EXTRA_PREFIX) :]: v for k, v in state.items() if k.startswith(EXTRA_PREFIX)}
    return weights, extras


def _torch_load(path: str) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt zip, pickle refusing a global, truncation...
        raise WeightsError(path, f"cannot read checkpoint with torch.load(weights_only=True): {exc}") from exc


def _plain_state_dict(path: str) -> StateDict:
    """A checkpoint that is a state dict, possibly wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``."""
    import torch

    obj = _torch_load(path)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise WeightsError(path, f"expected a state dict, found {type(obj).__name__}")
    # a training checkpoint that was not unwrapped (epoch counters, optimiser state) is not weights
    odd = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not str(k).startswith(EXTRA_PREFIX) and not isinstance(v, torch.Tensor)]  # fmt: skip
    if odd:
        raise WeightsError(
            path, f"expected a state dict of tensors; {len(odd)} entries are not tensors: {', '.join(odd[:8])}"
        )
    return dict(obj)


READERS: dict[str, Callable[[str], StateDict]] = {}


def read_checkpoint(path: str | os.PathLike, fmt: str) -> StateDict:
    """Read an upstream file of format ``fmt`` into ``{upstream key: tensor}``.

    Metadata that is not a weight (TorchXRayVision's operating thresholds and label names)
    comes back under :data:`EXTRA_PREFIX` keys; see :func:`split_extras`.
    """
    path = os.fspath(path)
    return READERS.get(fmt, _plain_state_dict)(path)


def check_against(state: StateDict, reference: StateDict, where: str) -> None:
    """Raise unless ``state`` has exactly ``reference``'s keys with the same shapes."""
    ref = {k: v for k, v in reference.items() if not k.endswith(_IGNORED_SUFFIXES)}
    got = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    missing = sorted(set(ref) - set(got))
    unexpected = sorted(set(got) - set(ref))
    shapes = [
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(ref[k].shape)}"
        for k in sorted(set(ref) & set(got))
        if tuple(got[k].shape) != tuple(ref[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:8])}{more}")
        raise WeightsError(where, "weights do not match the model; " + "; ".join(parts))


# ----------------------------------------------------------------------------- explicit key maps
# A rule is (pattern, replacement): the first pattern that matches an upstream key names its
# MONAI key through ``match.expand(replacement)`` (or ``replacement(match)``); a ``None``
# replacement drops the key on purpose (a decoder the backbone does not have). A key no rule
# matches is not part of the upstream layout and fails the conversion.
Rule = tuple["re.Pattern[str]", "str | Callable[[re.Match[str]], str] | None"]
_BN = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"


def _map_keys(upstream: StateDict, rules: list[Rule], reference: StateDict, fmt: str) -> StateDict:
    out: StateDict = {}
    source_of: dict[str, str] = {}
    unknown: list[str] = []
    clashes: list[str] = []
    for key, value in upstream.items():
        for pattern, replacement in rules:
            m = pattern.match(key)
            if m is None:
                continue
            if replacement is None:
                break
            new = replacement(m) if callable(replacement) else m.expand(replacement)
            if new in out:  # e.g. both ``norm.1`` and ``norm1`` spellings of one layer
                clashes.append(f"{source_of[new]} and {key} -> {new}")
            out[new] = value
            source_of[new] = key
            break
        else:
            unknown.append(key)
    if unknown or clashes:
        parts = []
        if unknown:
            more = f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""
            parts.append(f"{len(unknown)} keys not in the {fmt} layout: {', '.join(unknown[:8])}{more}")
        if clashes:
            parts.append(f"{len(clashes)} keys given twice: {', '.join(clashes[:8])}")
        # name what the model then lacks too, so a renamed key shows both of its names
        missing = sorted(k for k in reference if k not in out and not k.endswith(_IGNORED_SUFFIXES))
        if missing:
            more = f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
            parts.append(f"{len(missing)} missing: {', '.join(missing[:8])}{more}")
        raise WeightsError(None, "; ".join(parts))
    return out


def _check_prefix(upstream: StateDict, prefix: str, fmt: str) -> None:
    """A wrapper's prefix (``module.`` from DataParallel) must be on all keys or on none: a
    file where only some keys carry it was not written by one wrapped model."""
    having = [k for k in upstream if k.startswith(prefix)]
    if having and len(having) != len(upstream):
        lacking = [k for k in upstream if not k.startswith(prefix)]
        raise WeightsError(
            None,
            f"{fmt}: {len(having)} keys start with '{prefix}' and {len(lacking)} do not "
            f"(e.g. {having[0]}, {lacking[0]}); expected all or none",
        )


# ----------------------------------------------------------------------------- ResNet family
# torchvision's ResNet grammar (the stem, four stages of blocks, projection shortcuts without
# bias) is MONAI's too, so these rules keep names and only refuse what does not belong.
_RESNET_BODY = r"(?:conv1\.weight|bn1\.{bn}|layer[1-4]\.\d+\.(?:conv[123]\.weight|bn[123]\.{bn}|downsample\.0\.weight|downsample\.1\.{bn}))".format(bn=_BN)  # fmt: skip
_RESNET_RULES: list[Rule] = [
    (re.compile(rf"^({_RESNET_BODY})$"), r"\1"),
    (re.compile(r"^fc\.(weight|bias)$"), r"fc.\1"),
]


def _torchvision_resnet(upstream: StateDict, reference: StateDict) -> StateDict:
    """torchvision ResNet-18/34/50 → MONAI ``ResNet`` (same names; see the module docstring)."""
    return _map_keys(upstream, _RESNET_RULES, reference, "torchvision-resnet")


def _medicalnet_resnet(upstream: StateDict, reference: StateDict) -> StateDict:
    """MedicalNet 3D ResNet → MONAI 3D ``ResNet``: strip DataParallel's ``module.``, drop the
    ``conv_seg`` decoder, keep the backbone's names (MedicalNet's have no classifier)."""
    _check_prefix(upstream, "module.", "medicalnet-resnet")
    rules: list[Rule] = [
        (re.compile(r"^(?:module\.)?conv_seg\."), None),
        (re.compile(rf"^(?:module\.)?({_RESNET_BODY})$"), r"\1"),
    ]
    return _map_keys(upstream, rules, reference, "medicalnet-resnet")


# RadImageNet's PyTorch port is a torchvision network wrapped as
#     class Backbone(nn.Module): self.backbone = nn.Sequential(*list(resnet50().children())[:-1])
# (BMEII-AI/RadImageNet pytorch_example.ipynb loads "resnet50_torch.pt" into
# ``nn.Sequential(*children[:9])`` with "All keys matched successfully";
# danielfrees/RadImageNet src/Backbone.py loads RadImageNet_pytorch/{ResNet50,DenseNet121}.pt
# into ``children()[:-1]``). So ResNet keys are ``backbone.<child index>.``: 0 conv1, 1 bn1,
# 4-7 layer1-4 (2, 3 and 8 are ReLU, max-pool, avg-pool: no weights), and DenseNet keys are
# ``backbone.0.`` + torchvision's ``features`` names. Neither holds a classifier.
# UNVERIFIED: the files are distributed on request only and none was inspected; this layout
# is inferred from the upstream and third-party loading code above (strict loads that
# succeed for ResNet50; for DenseNet121 only the loader code, with no run shown).
_RADIMAGENET_RESNET_CHILD = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _radimagenet_resnet(upstream: StateDict, reference: StateDict) -> StateDict:
    """RadImageNet ResNet50 (``backbone.<i>.`` torchvision children) → MONAI ``ResNet`` without head."""
    rules: list[Rule] = [
        (re.compile(r"^backbone\.0\.(weight)$"), r"conv1.\1"),
        (re.compile(rf"^backbone\.1\.({_BN})$"), r"bn1.\1"),
        (
            re.compile(rf"^backbone\.([4-7])\.(\d+\.(?:conv[123]\.weight|bn[123]\.{_BN}|downsample\.0\.weight|downsample\.1\.{_BN}))$"),
            lambda m: f"{_RADIMAGENET_RESNET_CHILD[m[1]]}.{m[2]}",
        ),
    ]  # fmt: skip
    return _map_keys(upstream, rules, reference, "radimagenet-resnet")


# ----------------------------------------------------------------------------- DenseNet family
def _densenet_rules(prefix: str, fmt_head: bool) -> list[Rule]:
    """torchvision's DenseNet ``features`` grammar under ``prefix`` (a regex), mapped to MONAI's
    ``features.`` with dense-layer modules nested under ``.layers.``. Both the code's ``norm1``
    and the published files' ``norm.1`` spelling are accepted (torchvision remaps the latter
    when it loads them; see ``_load_state_dict`` in torchvision/models/densenet.py)."""
    layer = r"(denseblock\d+\.denselayer\d+)"
    rules: list[Rule] = [
        (re.compile(rf"^{prefix}(conv0\.weight|norm0\.{_BN}|norm5\.{_BN})$"), r"features.\1"),
        (re.compile(rf"^{prefix}{layer}\.(norm[12]\.{_BN}|conv[12]\.weight)$"), r"features.\1.layers.\2"),
        (re.compile(rf"^{prefix}{layer}\.(norm)\.([12])\.({_BN})$"), r"features.\1.layers.\2\3.\4"),
        (re.compile(rf"^{prefix}{layer}\.(conv)\.([12])\.(weight)$"), r"features.\1.layers.\2\3.\4"),
        (re.compile(rf"^{prefix}(transition\d+\.(?:norm\.{_BN}|conv\.weight))$"), r"features.\1"),
    ]
    if fmt_head:
        rules.append((re.compile(r"^classifier\.(weight|bias)$"), r"class_layers.out.\1"))
    return rules


_TORCHVISION_DENSENET_RULES = _densenet_rules(r"features\.", fmt_head=True)


def _torchvision_densenet(upstream: StateDict, reference: StateDict) -> StateDict:
    """torchvision DenseNet-121 → MONAI ``DenseNet`` (``classifier`` → ``class_layers.out``)."""
    return _map_keys(upstream, _TORCHVISION_DENSENET_RULES, reference, "torchvision-densenet")


def _xrv_densenet(upstream: StateDict, reference: StateDict) -> StateDict:
    """TorchXRayVision DenseNet (read by :func:`_read_xrv_densenet`) → MONAI ``DenseNet``.

    xrv copied torchvision's DenseNet (with ``norm1`` names, one input channel and 18
    outputs), so the torchvision rules apply unchanged."""
    return _map_keys(upstream, _TORCHVISION_DENSENET_RULES, reference, "xrv-densenet")


def _radimagenet_densenet(upstream: StateDict, reference: StateDict) -> StateDict:
    """RadImageNet DenseNet121 (``backbone.0.`` = torchvision ``features``) → MONAI ``DenseNet`` without head."""
    return _map_keys(upstream, _densenet_rules(r"backbone\.0\.", fmt_head=False), reference, "radimagenet-densenet")


# ----------------------------------------------------------------------------- xrv: pickled module
# xrv's release files unpickle classes. ``torch.load(weights_only=True)`` refuses every global
# that is not allow-listed; the list below names exactly what an xrv DenseNet file refers to,
# and binds each name to an inert stand-in, so neither xrv's nor torch.nn's constructors or
# ``__setstate__`` run: unpickling only fills ``__dict__``s, from which the tensors are read.
# Upsample appears in models xrv re-saved after loading weights (it sets ``self.upsample``).
_XRV_GLOBALS = (
    "torchxrayvision.models.DenseNet",
    "torchxrayvision.models._DenseBlock",
    "torchxrayvision.models._DenseLayer",
    "torchxrayvision.models._Transition",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.pooling.AvgPool2d",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.upsampling.Upsample",
)


class _PickledModule:
    """Inert stand-in for a pickled ``nn.Module``: keeps its state, runs nothing."""

    upstream_name = ""
    dump_patches = False  # read by torch's legacy loader when it compares saved class source

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"{self.upstream_name}: module state is a {type(state).__name__}, not a dict")
        self.__dict__.update(state)


_XRV_STANDINS: dict[str, type] = {
    name: type(f"Pickled_{name.rsplit('.', 1)[1].lstrip('_')}", (_PickledModule,), {"upstream_name": name})
    for name in _XRV_GLOBALS
}


def _module_tensors(obj: Any, prefix: str, out: StateDict, where: str) -> None:
    """``state_dict()`` of an unpickled module tree, read from the stand-ins' ``__dict__``s:
    parameters, then persistent buffers, then children, as ``nn.Module`` orders them."""
    import torch

    if not isinstance(obj, _PickledModule):
        raise WeightsError(where, f"'{prefix.rstrip('.') or 'the file'}' is a {type(obj).__name__}, not a module")
    state = vars(obj)
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise WeightsError(where, f"{prefix}{name} is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _module_tensors(child, f"{prefix}{name}.", out, where)


def _refused_global(message: str) -> str | None:
    """The global an allow-list refused, from the unpickler's message."""
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"unrecognized function (\S+)", message)
    return m[1] if m else None


def _legacy_allow_list() -> dict[str, Any]:
    import collections

    import torch

    return {
        **_XRV_STANDINS,
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "__builtin__.set": set,  # protocol-2 pickles spell builtins the Python 2 way
        # the two rebuild functions torch's own weights-only unpickler admits for these files
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    }


def _restricted_pickle_module():
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves only allow-listed globals.

    Needed for pre-1.6 (non-zip) files: they record every pickled module as a
    ``("module", class, source file, source)`` persistent id, which torch's weights-only
    unpickler rejects outright ("Only persistent_load of storage is allowed"). Overriding
    ``find_class`` is Python's documented way to restrict unpickling: every GLOBAL, and so
    every callable REDUCE or BUILD can reach, comes from the same list as the zip path's
    ``safe_globals`` (storages are resolved by torch's loader before this is asked).
    """
    import pickle
    import types

    allowed = _legacy_allow_list()

    class AllowListUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            full = f"{module}.{name}"
            if full not in allowed:
                raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {full}")
            return allowed[full]

    module = types.ModuleType("medtl_allow_list_pickle")
    module.Unpickler = AllowListUnpickler
    module.load = lambda f, **kwargs: AllowListUnpickler(f, **kwargs).load()
    return module


def _load_xrv_object(path: str) -> Any:
    import warnings
    import zipfile

    import torch

    with warnings.catch_warnings():
        # pre-1.6 pickles carry each module class's source, which torch compares with the
        # class it now finds: our stand-ins always differ, and that is the point
        warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code for container")
        if zipfile.is_zipfile(path):
            allowed = [(cls, name) for name, cls in _XRV_STANDINS.items()]
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())


def _read_xrv_densenet(path: str) -> StateDict:
    """A TorchXRayVision ``DenseNet`` saved whole with ``torch.save(model)``.

    Returns its state dict under xrv's own names (``features.*``, ``classifier.*``) plus, when
    the file carries them, ``medtl:op_threshs`` (float tensor, one per output) and
    ``medtl:pathologies`` (list of label names). A plain state dict of the same model is
    accepted too. Zip files (PyTorch >= 1.6) are read with ``torch.load(weights_only=True)``
    under ``safe_globals``; older files, which weights-only loading cannot read when they hold
    modules, through :func:`_restricted_pickle_module` with the same list. Any global outside
    :data:`_XRV_GLOBALS` (plus tensor rebuilding) fails, naming it.
    """
    import pickle

    import torch

    try:
        obj = _load_xrv_object(path)
    except pickle.UnpicklingError as exc:
        name = _refused_global(str(exc))
        if name:
            raise WeightsError(
                path,
                f"refusing to unpickle global '{name}': an xrv-densenet file may refer only to the "
                "torchxrayvision.models DenseNet classes and the torch.nn layers they use",
            ) from None
        raise WeightsError(path, f"cannot read xrv-densenet file: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - corrupt archive, truncated file...
        raise WeightsError(path, f"cannot read xrv-densenet file: {exc}") from exc

    if isinstance(obj, dict):  # xrv's model.state_dict() saved on its own
        return _plain_state_dict(path)
    top = _XRV_STANDINS["torchxrayvision.models.DenseNet"]
    if type(obj) is not top:
        found = getattr(obj, "upstream_name", "") or type(obj).__name__
        raise WeightsError(path, f"expected a pickled torchxrayvision.models.DenseNet, found {found}")
    state: StateDict = {}
    _module_tensors(obj, "", state, path)
    attrs = vars(obj)
    # op_threshs: a buffer in xrv >= 0.0.2x, a plain attribute (often None) before
    thresholds = state.pop("op_threshs", None)
    if thresholds is None and attrs.get("op_threshs") is not None:
        try:
            thresholds = torch.as_tensor(attrs["op_threshs"], dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise WeightsError(path, f"op_threshs is not a list of numbers: {exc}") from exc
    labels = attrs.get("pathologies", attrs.get("targets"))
    outputs = state["classifier.weight"].shape[0] if "classifier.weight" in state else None
    if thresholds is not None:
        thresholds = thresholds.detach().to(torch.float32).reshape(-1)
        if outputs is not None and thresholds.numel() != outputs:
            raise WeightsError(path, f"op_threshs has {thresholds.numel()} values for {outputs} outputs")
        state[EXTRA_PREFIX + "op_threshs"] = thresholds
    if labels is not None:
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise WeightsError(path, f"pathologies is a {type(labels).__name__}, not a list of names")
        if outputs is not None and len(labels) != outputs:
            raise WeightsError(path, f"{len(labels)} pathology names for {outputs} outputs")
        state[EXTRA_PREFIX + "pathologies"] = list(labels)
    return state


READERS["xrv-densenet"] = _read_xrv_densenet


# ----------------------------------------------------------------------------- lukemelas EfficientNet
_FLAT_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.+)$")
_NESTED_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\d+)\.(.+)$")


def _lukemelas_efficientnet(upstream: StateDict, reference: StateDict) -> StateDict:
    """lukemelas numbers blocks flat (``_blocks.7.``); MONAI nests them under their stage and
    keeps the running index (``_blocks.3.7.`` in B0). Blocks are matched in order, and everything
    else by name."""
    ref_blocks = sorted(
        {(int(m[1]), int(m[2])) for k in reference if (m := _NESTED_BLOCK.match(k))}
    )  # (stage, index) in network order
    flat_to_nested = {i: f"{s}.{b}" for i, (s, b) in enumerate(ref_blocks)}
    out: StateDict = {}
    for key, value in upstream.items():
        m = _FLAT_BLOCK.match(key)
        if m:
            idx = int(m[1])
            if idx not in flat_to_nested:
                raise WeightsError(None, f"checkpoint has block {idx}; the model has {len(ref_blocks)} blocks")
            key = f"_blocks.{flat_to_nested[idx]}.{m[2]}"
        out[key] = value
    return out


#: format → converter(upstream state, reference MONAI state) → MONAI-keyed state
CONVERTERS: dict[str, Callable[[StateDict, StateDict], StateDict]] = {
    "lukemelas-efficientnet": _lukemelas_efficientnet,
    "torchvision-resnet": _torchvision_resnet,
    "torchvision-densenet": _torchvision_densenet,
    "xrv-densenet": _xrv_densenet,
    "medicalnet-resnet": _medicalnet_resnet,
    "radimagenet-resnet": _radimagenet_resnet,
    "radimagenet-densenet": _radimagenet_densenet,
}


def _match_counters(state: StateDict, reference: StateDict) -> StateDict:
    """Give ``state`` exactly ``reference``'s BatchNorm counters so a strict load works.

    Files saved before PyTorch 0.4.1 (torchvision's 2017 DenseNet) have no
    ``num_batches_tracked``; it only matters with ``momentum=None``, which none of these
    networks use, so a missing counter takes the reference's value (a fresh 0) when the rest
    of its BatchNorm is present, and a counter the model lacks is dropped.
    """
    out = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES) or k in reference}
    for key, value in reference.items():
        if key.endswith(_IGNORED_SUFFIXES) and key not in out:
            if key[: -len(_IGNORED_SUFFIXES[0])] + "running_mean" in out:
                out[key] = value.clone()
    return out


def convert(upstream: StateDict, fmt: str, reference: StateDict, where: str) -> StateDict:
    """Map an upstream state dict onto ``reference``'s keys and check it matches exactly.

    :data:`EXTRA_PREFIX` metadata is ignored (read it with :func:`split_extras`).
    """
    if fmt not in CONVERTERS:
        raise WeightsError(where, f"no converter for upstream format '{fmt}'")
    weights, _extras = split_extras(upstream)
    try:
        state = CONVERTERS[fmt](weights, reference)
    except WeightsError as exc:
        raise WeightsError(where, exc.reason) from exc
    state = _match_counters(state, reference)
    check_against(state, reference, where)
    return state
