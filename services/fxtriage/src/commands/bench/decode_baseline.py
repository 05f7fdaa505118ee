"""The baseline of `fxtriage bench decode`: the same model input made the way a
Python pipeline makes it, with pydicom (its pixel data handlers: pylibjpeg's
OpenJPEG, libjpeg and RLE plugins when installed, else its own) and numpy.

For each file: read the dataset from memory, decode the first frame at full
resolution, apply the modality rescale, the dataset's window (else the 1st and
99th percentiles), invert MONOCHROME1, then area-average into a letterbox of
SIZE x SIZE the way fxtriage does (each output pixel the mean of the whole
source pixels it covers, centred on black), with np.add.reduceat along each
axis.

Usage: python3 decode_baseline.py SIZE ROUNDS OUT_DIR FILE...
Prints one JSON object per file: its median time in milliseconds over ROUNDS
and the decoder used; writes each input as little-endian float32 to
OUT_DIR/<index>.f32 for fxtriage to compare with its own.
"""

import io
import json
import statistics
import sys
import time

import numpy as np
import pydicom


def first(value, default):
    if value is None:
        return default
    if isinstance(value, pydicom.multival.MultiValue):
        return float(value[0])
    return float(value)


def area_average(image: np.ndarray, target: int, axis: int) -> np.ndarray:
    """Each target pixel the mean of the whole source pixels it covers along
    `axis` (shrinking only): one np.add.reduceat over the runs."""
    source = image.shape[axis]
    ratio = np.float32(source) / np.float32(target)
    starts = (np.arange(target, dtype=np.float32) * ratio).astype(np.int64)
    lengths = np.diff(np.append(starts, source))
    sums = np.add.reduceat(image, starts, axis=axis)
    shape = [1, 1]
    shape[axis] = target
    return sums / lengths.reshape(shape).astype(np.float32)


def model_input(data: bytes, size: int) -> np.ndarray:
    dataset = pydicom.dcmread(io.BytesIO(data))
    pixels = dataset.pixel_array.astype(np.float32)
    slope = first(dataset.get("RescaleSlope"), 1.0)
    intercept = first(dataset.get("RescaleIntercept"), 0.0)
    values = pixels * np.float32(slope) + np.float32(intercept)
    center = first(dataset.get("WindowCenter"), None)
    width = first(dataset.get("WindowWidth"), None)
    if center is not None and width is not None and width >= 1:
        c, w = center - 0.5, width - 1.0
        scaled = np.clip((values - c) / w + 0.5, 0.0, 1.0)
    else:
        low, high = np.percentile(values, [1, 99])
        high = high if high > low else low + 1
        scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
    if dataset.PhotometricInterpretation == "MONOCHROME1":
        scaled = 1.0 - scaled
    rows, columns = scaled.shape
    scale = min(size / columns, size / rows)
    new_columns = min(max(round(columns * scale), 1), size)
    new_rows = min(max(round(rows * scale), 1), size)
    resized = area_average(area_average(scaled.astype(np.float32), new_rows, 0), new_columns, 1)
    output = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_rows) // 2, (size - new_columns) // 2
    output[top : top + new_rows, left : left + new_columns] = resized
    return output


def decoder(data: bytes) -> str:
    dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    syntax = dataset.file_meta.TransferSyntaxUID
    try:
        from pydicom.pixels.decoders.base import get_decoder

        plugins = get_decoder(syntax).available_plugins
        return f"pydicom {pydicom.__version__} ({', '.join(plugins)})"
    except Exception:  # noqa: BLE001 - the name is for the report only
        return f"pydicom {pydicom.__version__}"


def main() -> None:
    size, rounds, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    for index, path in enumerate(sys.argv[4:]):
        with open(path, "rb") as handle:
            data = handle.read()
        result = model_input(data, size)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            result = model_input(data, size)
            times.append((time.perf_counter() - started) * 1000.0)
        result.astype("<f4").tofile(f"{out_dir}/{index}.f32")
        print(
            json.dumps(
                {"file": path, "median_ms": statistics.median(times), "decoder": decoder(data)}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
