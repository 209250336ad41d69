"""JPEG decoding for the frame readers: fast, strict, and identical to PIL's pixels.

`simplejpeg` (libjpeg-turbo, same DCT and upsampling defaults as Pillow) decodes about twice as
fast as PIL and gives bit-identical RGB output for baseline/progressive YCbCr and greyscale
JPEGs (checked in tests/test_data_transforms.py). It is also stricter: any libjpeg warning
(truncated file, corrupt entropy data) is an error, where PIL may return a half-grey image. We
want that: a corrupt frame must be reported, never silently used. Files simplejpeg cannot handle
by design (CMYK/YCCK) go through PIL. Without simplejpeg installed, PIL is used for everything.
"""
from __future__ import annotations

import ctypes
import io
import os
import sys

from PIL import Image

from adafocus_jax.data.errors import DataError

try:  # Optional speed-up; listed in setup.cfg.
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where simplejpeg is missing.
    simplejpeg = None

_SIMPLEJPEG_COLORSPACES = ("YCbCr", "Gray", "RGB")

# Pillow returns the memory of every freed image to the OS by default (blocks_max = 0), so each
# decoded frame, crop and resized crop pays fresh page faults: about a third of the CPU time of
# a training clip. Keeping up to 128 freed blocks (a few tens of MB for 256-px frames) removes
# that cost; pixels are unchanged. An explicit PILLOW_BLOCKS_MAX in the environment wins.
_PIL_BLOCKS_MAX = 128
if "PILLOW_BLOCKS_MAX" not in os.environ and Image.core.get_blocks_max() < _PIL_BLOCKS_MAX:
    Image.core.set_blocks_max(_PIL_BLOCKS_MAX)


# glibc malloc serves every block above a (dynamic, at most 32 MiB) threshold with a fresh mmap
# and hands small freed heap tops back to the OS, so the per-clip arrays (a 260 KB decoded frame,
# a 1.2-1.8 MB `[T, 224, 224, 3]` clip) page-fault anew for every video: about 1 ms of system
# time per training clip (2.2 -> 0.9 ms, measured with benchmarks/input_pipeline.py). Serving
# blocks below 32 MiB from the heap and trimming only above 64 MiB of free heap keeps those
# pages mapped. Batches (tens of MB) still use mmap, with numpy's huge-page advice. Only on
# glibc, and only where neither MALLOC_MMAP_THRESHOLD_ nor MALLOC_TRIM_THRESHOLD_ is set.
_MALLOC_MMAP_THRESHOLD = 32 << 20
_MALLOC_TRIM_THRESHOLD = 64 << 20


def _tune_glibc_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds (see above); False where it does not apply."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has a no-op mallopt)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok_mmap = mallopt(m_mmap_threshold, _MALLOC_MMAP_THRESHOLD)
    ok_trim = mallopt(m_trim_threshold, _MALLOC_TRIM_THRESHOLD)
    return bool(ok_mmap and ok_trim)


MALLOC_TUNED = _tune_glibc_malloc()


def _decode_with_pil(data: bytes, origin: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB") if im.mode != "RGB" else im.copy()
    except Exception as e:  # PIL raises OSError, UnidentifiedImageError, SyntaxError, ...
        raise DataError(origin, f"cannot decode image ({type(e).__name__}: {e})") from e


def decode_jpeg(data: bytes, origin: str) -> Image.Image:
    """Encoded JPEG bytes -> RGB PIL image; a corrupt or empty file raises DataError(origin)."""
    if not data:
        raise DataError(origin, "empty image file")
    if simplejpeg is None or not data.startswith(b"\xff\xd8"):
        # Not a JPEG (e.g. PNG frames): PIL handles it or reports it.
        return _decode_with_pil(data, origin)
    try:
        array = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as e:
        try:
            colorspace = simplejpeg.decode_jpeg_header(data)[2]
        except ValueError:
            colorspace = None
        if colorspace is not None and colorspace not in _SIMPLEJPEG_COLORSPACES:
            return _decode_with_pil(data, origin)
        raise DataError(origin, f"corrupt JPEG ({e})") from e
    return _array_to_image(array)


def _array_to_image(array) -> Image.Image:
    """uint8 `[H, W, 3]` -> RGB PIL image; like `Image.fromarray`, minus its zero fill of the
    new image (which is overwritten at once)."""
    image = Image.new("RGB", (array.shape[1], array.shape[0]), None)
    image.frombytes(array)
    return image


def read_file(path: str, origin: str) -> bytes:
    """Whole file as bytes; a missing or unreadable file raises DataError naming both."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise DataError(origin, f"missing file {path}") from e
    except OSError as e:
        raise DataError(origin, f"cannot read {path} ({e})") from e
