"""Read what torch.save wrote without running code from the file: tensors, plain containers and inert records.

YOLOv5's checkpoints pickle whole modules, which torch.load(weights_only=True) refuses and an unrestricted load
rebuilds by calling whatever globals the file names. Here every global goes through an explicit allowlist: storages
become tensors, YOLOv5's and torch.nn's layer classes become `ModuleRecord`s holding their attributes, and anything
else (os.system, builtins.eval, ...) is refused before it could be called.
"""
from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

import torch

from ..messages import InputError, first_line

YOLOV5_PACKAGES = ("models", "yolov5.models")
"""Where YOLOv5's classes live: a clone's `models` package, or `yolov5.models` of the pip package."""

YOLOV5_LAYERS = {"yolo": ("DetectionModel", "Model", "Detect"), "common": ("Conv", "Bottleneck", "C3", "SPPF", "Concat")}
"""YOLOv5 v6.0-v7.0 classes of a detection model (models/yolo.py, models/common.py); `Model` is v6's name."""

TORCH_LAYERS = {"conv": ("Conv2d",), "batchnorm": ("BatchNorm2d",), "activation": ("SiLU",), "pooling": ("MaxPool2d",),
                "upsampling": ("Upsample",), "container": ("Sequential", "ModuleList")}
"""torch.nn.modules.<file> classes that YOLOv5 v6's standard layers are made of."""

MAX_ELEMENTS = 1 << 32
"""Largest tensor rebuilt (elements): views that expand a storage beyond any model's size are refused."""

_STORAGE_DTYPES = {"HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool, "UntypedStorage": torch.uint8}

_NUMPY_FORMATS = {"f2": "e", "f4": "f", "f8": "d", "i1": "b", "i2": "h", "i4": "i", "i8": "q",
                  "u1": "B", "u2": "H", "u4": "I", "u8": "Q", "b1": "?"}
"""numpy dtype codes of numbers, as struct formats: numpy values are decoded without numpy's own unpickling."""


class PickleRefused(InputError):
    """A file this reader will not rebuild, in one line naming it and why; nothing from it was run."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


class _Refusal(Exception):
    """Raised while unpickling; `load_archive` turns it into PickleRefused naming the file."""


class _Inert:
    """Base of the stand-ins that the pickle may create and fill (NEWOBJ, BUILD): they only keep data."""

    attrs: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = object.__new__(cls)
        obj.attrs = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (state, slotstate), the form of objects with __slots__
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise _Refusal(f"{type(self).__name__} state is not a mapping of attribute names")
        self.attrs = dict(state)


class ModuleRecord(_Inert):
    """An inert stand-in for a pickled module: its class's dotted name (`kind`) and its `__dict__` (`attrs`)."""

    kind: ClassVar[str] = ""

    @property
    def type_name(self) -> str:
        """The class name alone, e.g. 'Conv' for models.common.Conv."""
        return self.kind.rsplit(".", 1)[-1]

    def children(self) -> dict[str, ModuleRecord]:
        """Submodules by attribute name, in registration order (what `_modules` holds)."""
        mods = self.attrs.get("_modules")
        return {k: v for k, v in mods.items() if isinstance(v, ModuleRecord)} if isinstance(mods, dict) else {}

    def __repr__(self) -> str:
        return f"<record of {self.kind}>"


class NamespaceRecord(_Inert):
    """An argparse.Namespace (YOLOv5's `opt`) as the attributes it held."""


class _DType(_Inert):
    """A numpy dtype of numbers, kept as its struct format and byte order."""

    code: str = ""
    order: str = "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
            self.order = state[1]

    def unpack(self, raw: Any, count: int) -> list[Any]:
        """`count` values from raw bytes."""
        if not isinstance(raw, bytes):
            raise _Refusal("a numpy value without its bytes")
        return list(struct.unpack(f"{self.order}{count}{_NUMPY_FORMATS[self.code]}", raw))


class _Array(_Inert):
    """A numpy array of numbers (YOLOv5's `best_fitness`), kept as nested lists in `value`."""

    value: Any = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _DType)):
            raise _Refusal("a numpy array state that is not numbers")
        _, shape, dtype, fortran, raw = state
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape) or fortran:
            raise _Refusal("a numpy array of an unexpected layout")
        flat = dtype.unpack(raw, math.prod(shape))
        self.value = torch.tensor(flat).reshape(shape).tolist() if flat else []


class _NDArrayType:
    """Marker for the `numpy.ndarray` global, which is only ever an argument of `_reconstruct`."""


@dataclass(frozen=True)
class _StorageType:
    """Marker for a torch.*Storage global: the dtype its persistent ids name."""

    dtype: torch.dtype


@dataclass(frozen=True)
class _Storage:
    """One storage of the archive, as a flat tensor of its dtype."""

    flat: torch.Tensor


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise _Refusal("a tensor whose size or stride is not a tuple of integers")
    return value


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2: a view of one storage, bounds checked."""
    size, stride = _ints(size), _ints(stride)
    if not isinstance(storage, _Storage) or type(offset) is not int or offset < 0 or len(size) != len(stride):
        raise _Refusal("a tensor that does not point into a storage of the archive")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if min(stride, default=0) < 0 or min(size, default=0) < 0 or last >= storage.flat.numel() \
            or math.prod(size) > MAX_ELEMENTS:
        raise _Refusal("a tensor that reaches beyond its storage")
    return storage.flat.as_strided(size, stride, offset)


def _rebuild_parameter(data: Any, requires_grad: Any = False, hooks: Any = None, state: Any = None) -> torch.Tensor:
    """torch._utils._rebuild_parameter(_with_state): the parameter's data as a plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise _Refusal("a parameter without a tensor")
    return data


def _codecs_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """_codecs.encode as protocol 2 uses it for bytes: latin-1 text back to bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refusal("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


def _numpy_dtype(code: Any, align: Any = False, copy: Any = False) -> _DType:
    if code not in _NUMPY_FORMATS:
        raise _Refusal(f"a numpy dtype {code!r} that is not a number")
    dtype = _DType()
    dtype.code = code
    return dtype


def _numpy_scalar(dtype: Any, raw: Any = None) -> Any:
    if not isinstance(dtype, _DType):
        raise _Refusal("a numpy scalar without a number dtype")
    return dtype.unpack(raw, 1)[0]


def _numpy_reconstruct(cls: Any, shape: Any, tag: Any) -> _Array:
    if not isinstance(cls, _NDArrayType):
        raise _Refusal("numpy reconstruction of something other than an ndarray")
    return _Array()


def _path(pure: type[PurePath]) -> Callable[..., str]:
    """pathlib's paths as the text they hold (pure paths: nothing touches the file system)."""
    def text(*parts: Any) -> str:
        if not all(isinstance(p, str) for p in parts):
            raise _Refusal("a path made of something other than text")
        return str(pure(*parts))
    return text


_posix_path, _windows_path = _path(PurePosixPath), _path(PureWindowsPath)


def _device(*args: Any) -> str:
    if not args or not all(isinstance(a, (str, int)) for a in args):
        raise _Refusal("a torch.device of unexpected arguments")
    return ":".join(map(str, args))


def _size(dims: Any = ()) -> tuple[int, ...]:
    return _ints(tuple(dims))


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_PLAIN: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size, ("torch", "device"): _device,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("argparse", "Namespace"): NamespaceRecord,
    ("pathlib", "PosixPath"): _posix_path, ("pathlib", "PurePosixPath"): _posix_path,
    ("pathlib", "WindowsPath"): _windows_path, ("pathlib", "PureWindowsPath"): _windows_path,
    ("numpy", "dtype"): _numpy_dtype, ("numpy", "ndarray"): _NDArrayType(),
    **{(core, "scalar"): _numpy_scalar for core in _NUMPY_CORE},
    **{(core, "_reconstruct"): _numpy_reconstruct for core in _NUMPY_CORE},
}
"""Every other global a YOLOv5 checkpoint names, mapped to a stand-in that builds a plain value."""

_CALLABLES = tuple(v for v in _PLAIN.values() if callable(v) and not isinstance(v, type)) + (OrderedDict, set, frozenset)
_RECORD_CLASSES: dict[str, type[ModuleRecord]] = {}


def _record_class(kind: str) -> type[ModuleRecord]:
    """The record type standing in for the layer class `kind` (one per class, so records keep their kind)."""
    if kind not in _RECORD_CLASSES:
        _RECORD_CLASSES[kind] = type(kind.rsplit(".", 1)[-1], (ModuleRecord,), {"kind": kind, "__module__": __name__})
    return _RECORD_CLASSES[kind]


def _is_layer(module: str, name: str) -> bool:
    for package in YOLOV5_PACKAGES:
        if module.startswith(package + ".") and name in YOLOV5_LAYERS.get(module[len(package) + 1:], ()):
            return True
    return module.startswith("torch.nn.modules.") and name in TORCH_LAYERS.get(module[len("torch.nn.modules."):], ())


def _refusal(module: str, name: str) -> str:
    """Why a global is refused, in words: what the model is when the class says it, else that it is not allowed."""
    full = f"{module}.{name}"
    yolov5 = any(module.startswith(p + ".") for p in YOLOV5_PACKAGES)
    if module.split(".")[0] == "ultralytics":
        return (f"an Ultralytics model ({full}): its anchor-free heads (YOLOv5u, YOLOv8) are not YOLOv5's "
                "anchor-based Detect, which DH-Net's heads are")
    if yolov5 and "Segment" in name:
        return f"a segmentation model ({full}): DH-Net has detection heads only"
    if yolov5 and name == "ClassificationModel":
        return f"a classification model ({full}), not a detector"
    if yolov5 or module.startswith("torch.nn.modules."):
        return (f"{full} is not a layer of YOLOv5 v6's standard architecture: an edited backbone or head, "
                "which DH-Net cannot represent")
    return f"its pickle names {full}, which is not on the allowlist of a YOLOv5 checkpoint: refused, nothing was run"


class _Archive:
    """The zip archive torch.save writes: `<prefix>/data.pkl` and each storage at `<prefix>/data/<key>`."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        pkls = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise _Refusal("a zip archive, but not one that torch.save wrote (no <name>/data.pkl)")
        self.zf, self.prefix = zf, pkls[0][: -len("data.pkl")]
        order = f"{self.prefix}byteorder"
        self.big_endian = order in zf.namelist() and zf.read(order).strip() == b"big"
        self.cache: dict[tuple[str, torch.dtype], _Storage] = {}

    def storage(self, pid: Any) -> _Storage:
        """The storage a persistent id ('storage', type, key, location, numel) names, read once."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and re.fullmatch(r"\w+", pid[2]) and type(pid[4]) is int and pid[4] >= 0):
            raise _Refusal("a persistent id that is not a torch storage")
        dtype, key, numel = pid[1].dtype, pid[2], pid[4]
        if (key, dtype) not in self.cache:
            raw = self.zf.read(f"{self.prefix}data/{key}")
            size = numel * torch.empty((), dtype=dtype).element_size()
            if len(raw) < size:
                raise _Refusal(f"storage {key} holds {len(raw)} bytes of {size}: the file is truncated")
            if self.big_endian and size > numel:
                raise _Refusal("written on a big-endian machine, which this reader does not convert")
            flat = torch.frombuffer(bytearray(raw[:size]), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
            self.cache[key, dtype] = _Storage(flat)
        return self.cache[key, dtype]


class _Unpickler(pickle._Unpickler):
    """pickle's own machine with find_class, REDUCE, NEWOBJ and BUILD restricted to the stand-ins above."""

    dispatch = dict(pickle._Unpickler.dispatch)
    stack: list[Any]  # the machine's state, set by pickle._Unpickler.load
    append: Callable[[Any], None]
    proto: int

    def __init__(self, archive: _Archive) -> None:
        super().__init__(io.BytesIO(archive.zf.read(f"{archive.prefix}data.pkl")), encoding="utf-8")
        self.archive = archive

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # protocol 2 writes Python 2 names (__builtin__.set)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _PLAIN:
            return _PLAIN[module, name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if _is_layer(module, name):
            return _record_class(f"{module}.{name}")
        raise _Refusal(_refusal(module, name))

    def persistent_load(self, pid: Any) -> Any:
        return self.archive.storage(pid)

    def _reduce(self) -> None:
        args, func = self.stack.pop(), self.stack[-1]
        allowed = any(func is c for c in _CALLABLES) or (isinstance(func, type) and issubclass(func, _Inert))
        if not allowed or not isinstance(args, tuple):
            raise _Refusal(f"its pickle calls {type(func).__name__} {func!r:.60}, which is not on the allowlist: "
                           "refused, nothing was run")
        self.stack[-1] = func(*args)

    def _newobj(self) -> None:
        self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, _Inert)):
            raise _Refusal(f"its pickle creates {cls!r:.60}, which is not on the allowlist: refused, nothing was run")
        self.append(cls.__new__(cls))

    def _newobj_ex(self) -> None:
        self.stack.pop()
        self._newobj()

    def _build(self) -> None:
        state, inst = self.stack.pop(), self.stack[-1]
        if isinstance(inst, _Inert):
            inst.__setstate__(state)
        elif type(inst) is not OrderedDict:  # a state dict's `_metadata` (module versions) is not needed
            raise _Refusal(f"its pickle sets the state of a {type(inst).__name__}: refused, nothing was run")

    def _refuse_opcode(self) -> None:
        raise _Refusal("a pickle opcode that torch.save never writes (INST, OBJ, EXT or text PERSID)")


_RESTRICTED: dict[int, Any] = {pickle.REDUCE[0]: _Unpickler._reduce, pickle.NEWOBJ[0]: _Unpickler._newobj,
                               pickle.NEWOBJ_EX[0]: _Unpickler._newobj_ex, pickle.BUILD[0]: _Unpickler._build}
_RESTRICTED.update({op[0]: _Unpickler._refuse_opcode
                    for op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.PERSID)})
_Unpickler.dispatch.update(_RESTRICTED)


def load_archive(path: str | Path) -> Any:
    """What a torch.save file holds, rebuilt from tensors, plain values and records only; PickleRefused otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head.startswith(b"PK"):
            raise _Refusal("not a zip archive as torch.save writes (a legacy torch file or another format)")
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise _Refusal("truncated or damaged: its zip directory cannot be read") from None
        with zf:
            return _Unpickler(_Archive(zf)).load()
    except _Refusal as exc:
        raise PickleRefused(path, str(exc)) from None
    except OSError as exc:
        raise PickleRefused(path, f"cannot be read ({exc.strerror or first_line(exc)})") from None
    except Exception as exc:  # malformed data anywhere in the pickle: one line, whatever broke
        raise PickleRefused(path, f"damaged or not a torch.save file ({type(exc).__name__}: {first_line(exc)})") \
            from None
