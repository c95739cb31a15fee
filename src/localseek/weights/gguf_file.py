"""GGUF container reading: header, metadata and tensor table of a memory-mapped .gguf file.

`gguf.GGUFReader` builds a numpy view per array element, which takes 10-60 s on the 262k-token
vocabulary of a Gemma file; this reader parses the same layout in well under a second and
checks every length and offset against the file size, so a truncated or corrupt file fails
here, naming what is wrong, before any tensor memory is allocated.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from localseek.errors import ModelLoadError, UnsupportedModelError

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS

# GGUF value type id -> (struct format, numpy dtype) for fixed-size scalars.
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"),
    1: ("<b", "<i1"),
    2: ("<H", "<u2"),
    3: ("<h", "<i2"),
    4: ("<I", "<u4"),
    5: ("<i", "<i4"),
    6: ("<f", "<f4"),
    7: ("<?", "<u1"),  # bool
    10: ("<Q", "<u8"),
    11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7


@dataclass(frozen=True)
class GGUFTensorInfo:
    """Where one tensor lives in the file and how it is stored."""

    name: str
    shape: tuple[int, ...]  # torch order (outermost first): ggml's ne reversed
    ggml_type: int  # raw GGMLQuantizationType id
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def ggml_type_name(type_id: int) -> str:
    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return f"unknown type id {type_id}"


class _Cursor:
    """Bounds-checked little-endian reads from the mapped file."""

    def __init__(self, buf: mmap.mmap, path: str):
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ModelLoadError(
                f"GGUF file {self.path} is truncated or corrupt: reading {what} needs "
                f"{n} bytes at offset {self.pos}, but the file has {self.size} bytes"
            )

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        # A few converters wrote token bytes that are not UTF-8; keep them visible, not fatal.
        return raw.decode("utf-8", errors="replace")


class GGUFFile:
    """A parsed .gguf file: `metadata` (key -> value), `tensors` (in file order), raw tensor bytes.

    Numeric metadata arrays become numpy arrays, string arrays lists of str. The mapping is
    private copy-on-write, so tensor views are writable numpy arrays (torch.from_numpy accepts
    them) while the file stays untouched and unread pages cost no memory.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            with open(self.path, "rb") as handle:
                self._buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            raise ModelLoadError(f"cannot open GGUF file {self.path}: {exc}") from exc
        cur = _Cursor(self._buf, self.path)
        self.version = self._read_header(cur)
        num_tensors = cur.scalar("<Q", "the tensor count")
        num_kv = cur.scalar("<Q", "the metadata count")
        # Every entry takes at least 8 bytes, so a count beyond that is corruption, not data.
        for count, what in ((num_tensors, "tensors"), (num_kv, "metadata entries")):
            if count * 8 > cur.size:
                raise ModelLoadError(
                    f"GGUF file {self.path} is corrupt: it claims {count} {what} "
                    f"in {cur.size} bytes"
                )
        self.metadata: dict[str, Any] = {}
        for _ in range(num_kv):
            key = cur.string("a metadata key")
            value_type = cur.scalar("<I", f"the type of metadata {key!r}")
            self.metadata[key] = self._read_value(cur, value_type, key)
        self.tensors = self._read_tensor_table(cur, num_tensors)

    def _read_header(self, cur: _Cursor) -> int:
        cur.need(4, "the magic number")
        magic = self._buf[0:4]
        cur.pos = 4
        if magic != _MAGIC:
            raise ModelLoadError(
                f"{self.path} is not a GGUF file (starts with {magic!r}, expected {_MAGIC!r})"
            )
        version = cur.scalar("<I", "the version")
        if version not in (2, 3):
            raise UnsupportedModelError(
                f"GGUF file {self.path} has format version {version}; localseek reads "
                "versions 2 and 3 (little-endian); re-convert it with a current llama.cpp"
            )
        return version

    def _read_value(self, cur: _Cursor, value_type: int, key: str) -> Any:
        if value_type == _STRING:
            return cur.string(f"metadata {key!r}")
        if value_type in _SCALARS:
            value = cur.scalar(_SCALARS[value_type][0], f"metadata {key!r}")
            return bool(value) if value_type == _BOOL else value
        if value_type == _ARRAY:
            item_type = cur.scalar("<I", f"the element type of metadata {key!r}")
            count = cur.scalar("<Q", f"the length of metadata {key!r}")
            if item_type in _SCALARS:
                dtype = np.dtype(_SCALARS[item_type][1])
                cur.need(count * dtype.itemsize, f"metadata {key!r}")
                array = np.frombuffer(self._buf, dtype, count, cur.pos).copy()
                cur.pos += count * dtype.itemsize
                return array.astype(bool) if item_type == _BOOL else array
            if count * 8 > cur.size:
                raise ModelLoadError(
                    f"GGUF file {self.path} is corrupt: metadata {key!r} claims {count} items"
                )
            return [self._read_value(cur, item_type, key) for _ in range(count)]
        raise ModelLoadError(
            f"GGUF file {self.path} is corrupt: metadata {key!r} has unknown value type "
            f"{value_type}"
        )

    def _read_tensor_table(self, cur: _Cursor, count: int) -> list[GGUFTensorInfo]:
        entries = []
        for _ in range(count):
            name = cur.string("a tensor name")
            n_dims = cur.scalar("<I", f"the rank of tensor {name!r}")
            if not 1 <= n_dims <= _MAX_DIMS:
                raise ModelLoadError(
                    f"GGUF file {self.path} is corrupt: tensor {name!r} has {n_dims} dimensions"
                )
            ne = [cur.scalar("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims)]
            type_id = cur.scalar("<I", f"the type of tensor {name!r}")
            offset = cur.scalar("<Q", f"the offset of tensor {name!r}")
            entries.append((name, ne, type_id, offset))
        alignment = int(self.metadata.get("general.alignment", _DEFAULT_ALIGNMENT))
        if alignment <= 0 or alignment & (alignment - 1):
            raise ModelLoadError(
                f"GGUF file {self.path} is corrupt: general.alignment is {alignment}"
            )
        data_start = -(-cur.pos // alignment) * alignment
        return [self._tensor_info(e, data_start) for e in entries]

    def _tensor_info(self, entry: tuple, data_start: int) -> GGUFTensorInfo:
        name, ne, type_id, offset = entry
        try:
            block_elems, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
        except (ValueError, KeyError):
            raise UnsupportedModelError(
                f"tensor {name!r} in {self.path} uses {ggml_type_name(type_id)}, which "
                "localseek cannot read"
            ) from None
        if ne[0] % block_elems:
            raise ModelLoadError(
                f"GGUF file {self.path} is corrupt: tensor {name!r} row length {ne[0]} is not "
                f"a multiple of the {ggml_type_name(type_id)} block size {block_elems}"
            )
        rows = 1
        for d in ne[1:]:
            rows *= d
        nbytes = rows * (ne[0] // block_elems) * block_bytes
        start = data_start + offset
        if start + nbytes > len(self._buf):
            raise ModelLoadError(
                f"GGUF file {self.path} is truncated: tensor {name!r} needs bytes "
                f"{start}..{start + nbytes}, but the file ends at {len(self._buf)}"
            )
        return GGUFTensorInfo(name, tuple(reversed(ne)), type_id, start, nbytes)

    def raw(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's bytes as uint8 [*shape[:-1], bytes per row], a view of the mapping."""
        data = np.frombuffer(self._buf, np.uint8, info.nbytes, info.offset)
        return data.reshape(*info.shape[:-1], -1)

    @property
    def file_size(self) -> int:
        return len(self._buf)
