"""The torch-free checkpoint reader, the ONNX MobileNetV2 it feeds, and the model cache.

The network check runs the same weights through a plain numpy MobileNetV2 written here from
torchvision's description (batch norm not folded): equal logits prove the ONNX graph is the network.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flashlive.errors import InvalidArgument
from flashlive.perception import labels
from flashlive.perception.labels import Labeler

# --- writing checkpoints the way torch does, with stand-ins for torch's globals ---------------


def _rebuild_tensor_v2(*args: Any) -> None:
    raise AssertionError("only pickled, never called")


class FloatStorage:
    pass


class LongStorage:
    pass


_rebuild_tensor_v2.__module__ = "torch._utils"
FloatStorage.__module__ = LongStorage.__module__ = "torch"


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """pickle looks globals up by module name when it writes them: give it a tiny `torch`."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    torch.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    torch.LongStorage = LongStorage  # type: ignore[attr-defined]
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


class _Storage:
    def __init__(self, key: str, data: np.ndarray[Any, Any]) -> None:
        self.key, self.data = key, data


class _Tensor:
    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ):
        self.args = (storage, offset, size, stride)

    def __reduce__(self) -> Any:
        return _rebuild_tensor_v2, (*self.args, False, OrderedDict())


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, _Storage):
            return None
        self.storages[obj.key] = obj
        kind = LongStorage if obj.data.dtype == np.int64 else FloatStorage
        pid = ("storage", kind, obj.key, "cpu", obj.data.size)
        return (*pid, None) if self.legacy else pid


def write_checkpoint(path: Path, state: dict[str, _Tensor], legacy: bool) -> None:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy)
    pickler.dump(OrderedDict(state))
    storages = pickler.storages
    if legacy:
        with path.open("wb") as f:
            for header in (labels._LEGACY_MAGIC, 1001, {"little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(buffer.getvalue())
            pickle.dump(list(storages), f, protocol=2)
            for storage in storages.values():
                f.write(struct.pack("<q", storage.data.size) + storage.data.tobytes())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", buffer.getvalue())
            for key, storage in storages.items():
                archive.writestr(f"archive/data/{key}", storage.data.tobytes())


@pytest.mark.parametrize("legacy", [True, False])
def test_reader_respects_offset_size_and_stride(
    fake_torch: None, tmp_path: Path, legacy: bool
) -> None:
    base = np.arange(30, dtype=np.float32)
    shared = _Storage("0", base)
    state = {
        "plain": _Tensor(shared, 0, (2, 3), (3, 1)),
        "offset": _Tensor(shared, 6, (4,), (1,)),
        "transposed": _Tensor(shared, 10, (3, 2), (1, 3)),  # a column-major view
        "count": _Tensor(_Storage("1", np.array([7], dtype=np.int64)), 0, (), ()),
    }
    path = tmp_path / "model.pth"
    write_checkpoint(path, state, legacy)

    got = labels.read_state_dict(path)

    np.testing.assert_array_equal(got["plain"], base[:6].reshape(2, 3))
    np.testing.assert_array_equal(got["offset"], base[6:10])
    np.testing.assert_array_equal(got["transposed"], base[10:16].reshape(2, 3).T)
    assert got["count"].dtype == np.int64 and got["count"].shape == () and got["count"] == 7


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("legacy", [True, False])
def test_reader_refuses_a_pickle_that_calls_code(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Evil(marker)}, protocol=2)
    path = tmp_path / "evil.pth"
    if legacy:
        header = pickle.dumps({"little_endian": True})
        path.write_bytes(pickle.dumps(labels._LEGACY_MAGIC) + pickle.dumps(1001) + header + payload)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)

    with pytest.raises(pickle.UnpicklingError, match="system"):
        labels.read_state_dict(path)
    assert not marker.exists()


def test_reader_refuses_builtins_too() -> None:
    payload = pickle.dumps(eval, protocol=4)  # any global outside the list
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        labels._unpickle(io.BytesIO(payload), {})


# --- a plain numpy MobileNetV2 ----------------------------------------------------------------


def conv2d(x: np.ndarray[Any, Any], w: np.ndarray[Any, Any], stride: int, groups: int) -> Any:
    """Zero-padded 'same' convolution of one (C, H, W) image, as sums of shifted slices."""
    out_ch, _, k, _ = w.shape
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p)))
    h = (x.shape[1] + 2 * p - k) // stride + 1
    width = (x.shape[2] + 2 * p - k) // stride + 1
    out = np.zeros((out_ch, h, width))
    for i in range(k):
        for j in range(k):
            patch = padded[:, i : i + stride * h : stride, j : j + stride * width : stride]
            if groups == 1:
                out += np.tensordot(w[:, :, i, j], patch, axes=1)
            else:  # depthwise: one filter per channel
                out += w[:, 0, i, j][:, None, None] * patch
    return out


def batch_norm(x: Any, sd: dict[str, Any], prefix: str) -> Any:
    g, b, m, v = (sd[f"{prefix}.{k}"][:, None, None] for k in labels._BN_PARAMS)
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def relu6(x: Any) -> Any:
    return np.clip(x, 0.0, 6.0)


def numpy_mobilenet_v2(sd: dict[str, Any], image: np.ndarray[Any, Any]) -> Any:
    x = image.astype(np.float64)
    x = relu6(batch_norm(conv2d(x, sd["features.0.0.weight"], 2, 1), sd, "features.0.1"))
    layer, channels = 1, 32
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2)]
    settings += [(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, c, n, s in settings:
        for r in range(n):
            stride, p, y, i = (s if r == 0 else 1), f"features.{layer}.conv", x, 0
            if t != 1:
                y = relu6(batch_norm(conv2d(y, sd[f"{p}.0.0.weight"], 1, 1), sd, f"{p}.0.1"))
                i = 1
            dw = sd[f"{p}.{i}.0.weight"]
            y = relu6(batch_norm(conv2d(y, dw, stride, dw.shape[0]), sd, f"{p}.{i}.1"))
            y = batch_norm(conv2d(y, sd[f"{p}.{i + 1}.weight"], 1, 1), sd, f"{p}.{i + 2}")
            x = x + y if stride == 1 and channels == c else y
            layer, channels = layer + 1, c
    x = relu6(batch_norm(conv2d(x, sd["features.18.0.weight"], 1, 1), sd, "features.18.1"))
    return sd["classifier.1.weight"] @ x.mean(axis=(1, 2)) + sd["classifier.1.bias"]


def test_batch_norm_folding_matches_conv_then_batch_norm() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 9, 9)).astype(np.float32)
    for groups, w in ((1, rng.normal(size=(6, 4, 3, 3))), (4, rng.normal(size=(4, 1, 3, 3)))):
        out = w.shape[0]
        bn: dict[str, np.ndarray[Any, Any]] = {
            "bn.weight": rng.normal(size=(out,)),
            "bn.bias": rng.normal(size=(out,)),
            "bn.running_mean": rng.normal(size=(out,)),
            "bn.running_var": rng.uniform(0.1, 2.0, size=(out,)),
        }
        expected = batch_norm(conv2d(x, w, 2, groups), bn, "bn")
        gamma, beta, mean, var = (bn[f"bn.{k}"].astype(np.float32) for k in labels._BN_PARAMS)
        folded_w, folded_b = labels.fold_batch_norm(w.astype(np.float32), gamma, beta, mean, var)
        got = conv2d(x, folded_w, 2, groups) + folded_b[:, None, None]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


# --- the real model -----------------------------------------------------------------------------


def target_image() -> Image.Image:
    """Concentric rings: MobileNetV2 calls this 'spiral or coil' with high confidence."""
    image = Image.new("RGB", (640, 480), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for r in range(0, 200, 20):
        red = 0 if r % 40 == 0 else 255
        draw.ellipse((320 - r, 240 - r, 320 + r, 240 + r), outline=(red, 0, 0), width=10)
    return image


@pytest.fixture(scope="module")
def labeler(tmp_path_factory: pytest.TempPathFactory) -> Labeler:
    return Labeler.load(tmp_path_factory.mktemp("models"))


def test_onnx_graph_computes_the_same_logits_as_numpy(labeler: Labeler) -> None:
    image = target_image()
    state = labels.read_state_dict(labels.default_checkpoint_path())
    expected = numpy_mobilenet_v2(state, labels.preprocess(image)[0])

    got = labeler.logits(image)

    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-3)
    assert int(np.argmax(got)) == int(np.argmax(expected))


def test_top_labels_of_a_synthetic_image(labeler: Labeler) -> None:
    image = target_image()
    top = labeler.top(image, k=3)
    assert len(top) == 3
    assert top[0][0] == "spiral or coil" and top[0][1] > 0.5
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    # The same picture as an array, and shrunk, reads the same.
    assert labeler.top(np.asarray(image), k=1)[0][0] == "spiral or coil"
    assert labeler.top(image.resize((320, 240)), k=1)[0][0] == "spiral or coil"


def test_class_names_come_from_the_package() -> None:
    names = labels.class_names()
    assert len(names) == 1000
    assert names[0] == "tench" and names[967] == "espresso"


def test_preprocess_crops_the_centre_to_the_input_size() -> None:
    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, 100:200] = 255  # a white centre third
    x = labels.preprocess(wide)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    white = (1.0 - labels.MEAN) / labels.STD
    np.testing.assert_allclose(x[0, :, 112, 112], white, rtol=1e-5)


def test_preprocess_rejects_float_arrays() -> None:
    with pytest.raises(InvalidArgument):
        labels.preprocess(np.zeros((10, 10, 3), dtype=np.float32))


def test_assembled_model_is_cached_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Labeler.load(tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".onnx"
    digest = labels.file_sha256(labels.default_checkpoint_path())
    assert digest[:16] in files[0].name

    def no_assembly(state: Any) -> Any:
        raise AssertionError("assembled twice")

    monkeypatch.setattr(labels, "build_onnx", no_assembly)
    second = Labeler.load(tmp_path)
    assert list(tmp_path.iterdir()) == files
    image = target_image()
    np.testing.assert_array_equal(first.logits(image), second.logits(image))
