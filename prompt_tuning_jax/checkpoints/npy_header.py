"""A `.npy` header is checked against the bytes that follow it before anything is allocated.

`np.load` trusts the header: one declaring shape (2^40, 2^20) asks for 4 EiB and fails
with a MemoryError that names no file, and bytes after the data are ignored. The header
is read with numpy's own parser (`numpy.lib.format`), the byte count it implies
(product of the shape times the item size, in Python integers: no overflow) must equal
the bytes after it, and a mismatch is refused naming the file.
"""
from __future__ import annotations

import io
import math

import numpy as np

# 3.0 differs from 2.0 only in decoding the header as utf-8 (non-ASCII field names of
# structured dtypes); its length field and layout are 2.0's, so 2.0's reader reads it.
_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
            (3, 0): np.lib.format.read_array_header_2_0}


class NpyHeaderError(ValueError):
  """A `.npy` file whose header does not describe the bytes it holds (message names the file)."""


def read_header(data: bytes, source: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
  """(shape, fortran_order, dtype, header length in bytes) of `.npy` bytes; errors name `source`."""
  f = io.BytesIO(data)
  try:
    version = np.lib.format.read_magic(f)
    if version not in _READERS:
      raise ValueError(f".npy format version {version[0]}.{version[1]} is not one numpy writes")
    shape, fortran, dtype = _READERS[version](f)
  except ValueError as e:
    raise NpyHeaderError(f"{source} is not a readable .npy file: {e}") from None
  return tuple(int(n) for n in shape), bool(fortran), dtype, f.tell()


def check_npy_size(data: bytes, source: str) -> None:
  """Refuse `.npy` bytes whose header declares more or fewer data bytes than follow it."""
  shape, _, dtype, offset = read_header(data, source)
  if dtype.hasobject:  # pickled objects: np.load(allow_pickle=False) refuses them by name
    return
  declared = math.prod(shape) * dtype.itemsize
  held = len(data) - offset
  if declared != held:
    raise NpyHeaderError(f"{source}: the .npy header declares shape {shape} of {dtype} ({declared} bytes of data) "
                         f"but the file holds {held} bytes after the header; it is damaged or cut")
