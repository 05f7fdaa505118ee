"""Contact sheet of generated images, to look at what the model learns from.

    python preview.py OUT.png [--seed 7] [--n 16] [--model ../fxtriage-demo/model.onnx]

Each tile is one synthetic image (negatives and positives alternate); the
fracture mask is drawn in red. With --model (needs onnxruntime) the heatmap
cells at or above the manifest's box_threshold (next to the model; else 0.5)
are tinted green and the image score is printed.
"""

import argparse
import os
import struct
import zlib

import numpy as np

import synth


def write_png(path, rgb):
    """Minimal 8-bit RGB PNG writer (no imaging library needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--model")
    args = ap.parse_args()

    images, targets, labels = synth.dataset(args.seed, args.n)
    heat = None
    if args.model:
        import onnxruntime as ort

        sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        heat = sess.run(["heatmap"], {"image": images})[0]
        box = 0.5
        man = os.path.join(os.path.dirname(os.path.abspath(args.model)), "manifest.toml")
        if os.path.exists(man):
            import tomllib

            with open(man, "rb") as f:
                box = tomllib.load(f)["output"]["box_threshold"]
    cols = 4
    rows = (args.n + cols - 1) // cols
    sheet = np.zeros((rows * 260, cols * 260, 3), dtype=np.uint8)
    for i in range(args.n):
        g = (images[i, 0] * 255).astype(np.uint8)
        rgb = np.stack([g, g, g], axis=-1).astype(np.int32)
        cells = np.kron(targets[i, 0], np.ones((8, 8))) > 0
        rgb[cells, 0] = np.minimum(255, rgb[cells, 0] + 90)
        if heat is not None:
            hot = np.kron(heat[i, 0] >= box, np.ones((8, 8))) > 0
            rgb[hot, 1] = np.minimum(255, rgb[hot, 1] + 90)
            print(f"image {i}: label {labels[i]} score {heat[i].max():.3f}")
        r, c = divmod(i, cols)
        sheet[r * 260 + 2:r * 260 + 258, c * 260 + 2:c * 260 + 258] = rgb.astype(np.uint8)
    write_png(args.out, sheet)


if __name__ == "__main__":
    main()
