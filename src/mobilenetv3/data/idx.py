"""Reader for the IDX format of (Fashion-)MNIST: a magic number, big-endian dimensions, then the raw array.

Magic: two zero bytes, a type code (0x08 unsigned byte ... 0x0E float64) and the number of dimensions; then one
big-endian uint32 per dimension; then the data, big-endian, C order. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

# type code -> element type; multi-byte types are stored big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain, or gzip-compressed when the name ends in ``.gz``) into a native-endian array.

    Raises :class:`DataError` naming the file when it is missing, not gzip although named so, has a bad magic
    number, or holds fewer or more bytes than its header promises.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut-off gzip stream an EOFError
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file; ``name`` is used in error messages."""
    if len(raw) < 4:
        raise DataError(f"{name}: truncated IDX file ({len(raw)} bytes, shorter than the 4-byte magic number)")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 or zero1 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{name}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000TTNN with type code TT in "
                        f"{', '.join(f'{c:02x}' for c in IDX_DTYPES)} and NN >= 1 dimensions); not an IDX file?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX file ({len(raw)} bytes, header of {ndim} dimensions needs {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected:
        raise DataError(f"{name}: truncated IDX file: header promises shape {shape} of {dtype.name} "
                        f"({expected} bytes), file has {len(raw)}")
    if len(raw) > expected:
        # Trailing bytes mean the header and the data disagree; better to stop than to guess which is right.
        raise DataError(f"{name}: IDX file has {len(raw) - expected} bytes more than its header promises "
                        f"(shape {shape} of {dtype.name})")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)  # native order and writable, so torch can share it
