"""Hand-built ONNX models with known outputs, one per output format.

    python make_test_models.py [--check]

Writes classifier/, heatmap/ and yolo/ next to this file, each with a
model.onnx and a manifest.toml (with the model's sha256). Built with the
`onnx` package's helper API only (no training), opset 17, IR version 8, so
the files are byte-for-byte the same on every run. With --check it also runs
each model with onnxruntime and compares the outputs with the formulas below
(needs numpy and onnxruntime).

All three take `image` float32 [N,1,64,64] with a dynamic batch dimension N.

classifier  prob[n,0] = sigmoid(8 * mean(image[n]) - 4)
            (all 0 -> 0.0179862, all 0.5 -> 0.5, all 1 -> 0.9820138)
heatmap     heatmap[n,0,i,j] = mean(image[n,0,8i:8i+8,8j:8j+8])
            (AveragePool, kernel 8, stride 8: a bright 8-aligned square lights
            exactly the cells it covers)
yolo        output[n] = YOLO_OUT for every n, whatever the image: rows
            cx, cy, w, h (input pixels) and the fracture score, columns the
            4 candidates (see YOLO_OUT below)
"""

from __future__ import annotations

import argparse
import hashlib
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 64
OPSET = 17
IR_VERSION = 8

CLASSIFIER_A = 8.0
CLASSIFIER_B = -4.0

# [4 + C, A] with C = 1 class and A = 4 candidates; columns are candidates.
#   0: cx 20, cy 20, w 16, h 16, score 0.90  -> kept (box x 12..28, y 12..28)
#   1: cx 22, cy 21, w 16, h 16, score 0.80  -> IoU with 0 = 210/302 = 0.695, removed by NMS (IoU 0.45 or 0.5)
#   2: cx 48, cy 44, w 10, h 12, score 0.70  -> kept (box x 43..53, y 38..50)
#   3: cx 40, cy 10, w  8, h  8, score 0.10  -> below any sensible score threshold
YOLO_OUT = [
    [20.0, 22.0, 48.0, 40.0],  # cx
    [20.0, 21.0, 44.0, 10.0],  # cy
    [16.0, 16.0, 10.0, 8.0],  # w
    [16.0, 16.0, 12.0, 8.0],  # h
    [0.9, 0.8, 0.7, 0.1],  # score of class 0 ("fracture")
]


def image_input():
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])


def finish(graph):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="fxtriage make_test_models.py",
        producer_version="1",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def classifier():
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean4"], axes=[1, 2, 3], keepdims=1),  # [N,1,1,1]
        helper.make_node("Flatten", ["mean4"], ["mean"], axis=1),  # [N,1]
        helper.make_node("Mul", ["mean", "a"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
    ]
    inits = [
        helper.make_tensor("a", TensorProto.FLOAT, [], [CLASSIFIER_A]),
        helper.make_tensor("b", TensorProto.FLOAT, [], [CLASSIFIER_B]),
    ]
    out = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])
    return finish(helper.make_graph(nodes, "fxtriage_test_classifier", [image_input()], [out], inits))


def heatmap():
    nodes = [helper.make_node("AveragePool", ["image"], ["heatmap"], kernel_shape=[8, 8], strides=[8, 8])]
    out = helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, ["N", 1, SIZE // 8, SIZE // 8])
    return finish(helper.make_graph(nodes, "fxtriage_test_heatmap", [image_input()], [out]))


def yolo():
    rows, cols = len(YOLO_OUT), len(YOLO_OUT[0])
    flat = [v for row in YOLO_OUT for v in row]
    nodes = [
        helper.make_node("Shape", ["image"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero", "one"], ["batch"]),  # [N]
        helper.make_node("Concat", ["batch", "rows_cols"], ["out_shape"], axis=0),  # [N, 5, 4]
        helper.make_node("Expand", ["table", "out_shape"], ["output0"]),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("rows_cols", TensorProto.INT64, [2], [rows, cols]),
        helper.make_tensor("table", TensorProto.FLOAT, [1, rows, cols], flat),
    ]
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", rows, cols])
    return finish(helper.make_graph(nodes, "fxtriage_test_yolo", [image_input()], [out], inits))


COMMON_HEAD = '''# Hand-built test model, written by models/testdata/make_test_models.py; do not edit by hand.
# Not a real model: its output is a fixed formula of the input (see below).
'''

OP_POINTS = '''
# Not measured (hand-built test model): thresholds chosen for tests, rates set to 0.
[operating_points.suspected]
threshold = 0.5
sensitivity = 0.0
specificity = 0.0

[operating_points.possible]
threshold = 0.3
sensitivity = 0.0
specificity = 0.0

[evaluation]
held_out_images = 0
held_out_seed = 0
auc = 0.0
'''


def manifest(name, formula, sha, output_name, fmt, stride, box_threshold, stride_note, box_note, extra=""):
    return f'''{COMMON_HEAD}#
{formula}
name = "{name}"
version = "0.0.1"
intended_use = "Test fixture for the fxtriage inference code only; its output is a fixed formula of the input. Not a medical device."
trained_on = "nothing: hand-built with the onnx helper API by models/testdata/make_test_models.py"

[weights]
file = "model.onnx"
sha256 = "{sha}"

[input]
name = "image"
size = {SIZE}           # square side in pixels
channels = 1
# normalisation applied to the windowed 0..1 image: (x - mean) / std
mean = 0.0
std = 1.0

[output]
name = "{output_name}"
format = "{fmt}"
stride = {stride}          # {stride_note}
box_threshold = {box_threshold} # {box_note}
{extra}classes = ["fracture"]
{OP_POINTS}'''


FORMULAS = {
    "classifier": (
        "# input  image float32 [N,1,64,64]\n"
        "# output prob  float32 [N,1]\n"
        f"# prob[n,0] = sigmoid({CLASSIFIER_A:g} * mean(image[n]) + ({CLASSIFIER_B:g})) = 1 / (1 + exp(-(8 * mean - 4)))\n"
        "#   (mean over all 64*64 pixels of the normalised input tensor)\n"
        "#   image all 0.0 -> 0.01798621, all 0.5 -> 0.5, all 1.0 -> 0.98201379\n"
        "#   graph: ReduceMean(axes 1,2,3) -> Flatten -> Mul 8 -> Add -4 -> Sigmoid"
    ),
    "heatmap": (
        "# input  image   float32 [N,1,64,64]\n"
        "# output heatmap float32 [N,1,8,8]\n"
        "# heatmap[n,0,i,j] = mean(image[n,0, 8i..8i+8, 8j..8j+8])  (AveragePool, kernel 8x8, stride 8, no padding)\n"
        "#   example: image 0 except 1.0 at rows 16..32, columns 40..56 (end exclusive)\n"
        "#   -> cells (i,j) = (2,5), (2,6), (3,5), (3,6) are 1.0, all others 0.0;\n"
        "#   one connected region, box x 40..56, y 16..32 in input pixels"
    ),
    "yolo": (
        "# input  image   float32 [N,1,64,64]\n"
        "# output output0 float32 [N,5,4] = [N, 4 + C, A], C = 1 class, A = 4 candidates\n"
        "# The same constant for every image (Shape -> Slice -> Concat -> Expand of a constant):\n"
        "#   row 0 cx:    20, 22, 48, 40\n"
        "#   row 1 cy:    20, 21, 44, 10\n"
        "#   row 2 w:     16, 16, 10,  8\n"
        "#   row 3 h:     16, 16, 12,  8\n"
        "#   row 4 score: 0.9, 0.8, 0.7, 0.1  (class 0 \"fracture\", already a probability)\n"
        "# centre/size in input (64x64) pixels. Expected after box_threshold 0.25 and NMS at IoU 0.45 (nms_iou):\n"
        "#   candidate 0 kept: x1,y1,x2,y2 = 12,12,28,28 score 0.9\n"
        "#   candidate 1 removed: IoU with 0 = 210/302 = 0.695 (box 14,13,30,29)\n"
        "#   candidate 2 kept: 43,38,53,50 score 0.7\n"
        "#   candidate 3 dropped by the score threshold (0.1; box 36,6,44,14, overlaps nothing)"
    ),
}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_all():
    specs = {
        "classifier": (classifier(), "prob", "classifier", SIZE, 0.5,
                       "unused for format classifier", "unused for format classifier"),
        "heatmap": (heatmap(), "heatmap", "heatmap", 8, 0.5,
                    "heatmap cell size in input pixels; output [N,1,8,8]",
                    "heatmap cells at or above this form boxes (connected regions)"),
        "yolo": (yolo(), "output0", "yolo", 1, 0.25,
                 "unused for format yolo (boxes are in input pixels)",
                 "candidates scoring at or above this are kept before NMS"),
    }
    for name, (model, out_name, fmt, stride, box_t, stride_note, box_note) in specs.items():
        d = os.path.join(HERE, name)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "model.onnx")
        with open(path, "wb") as f:
            f.write(model.SerializeToString(deterministic=True))
        extra = "nms_iou = 0.45      # non-maximum suppression IoU\n" if fmt == "yolo" else ""
        text = manifest(f"fxtriage-test-{name}", FORMULAS[name], sha256(path), out_name, fmt, stride, box_t,
                        stride_note, box_note, extra)
        with open(os.path.join(d, "manifest.toml"), "w") as f:
            f.write(text)
        print(f"{name}: {os.path.getsize(path)} bytes, sha256 {sha256(path)}")


def check():
    import numpy as np
    import onnxruntime as ort

    def run(name, x):
        sess = ort.InferenceSession(os.path.join(HERE, name, "model.onnx"), providers=["CPUExecutionProvider"])
        return sess.run(None, {"image": x})[0]

    rng = np.random.default_rng(0)
    for n in (1, 3, 16):
        x = rng.uniform(0, 1, size=(n, 1, SIZE, SIZE)).astype(np.float32)
        x[0] = 0.5
        p = run("classifier", x)
        want = 1 / (1 + np.exp(-(CLASSIFIER_A * x.reshape(n, -1).mean(axis=1, dtype=np.float64) + CLASSIFIER_B)))
        assert p.shape == (n, 1), p.shape
        assert np.allclose(p[:, 0], want, atol=1e-6), (p[:, 0], want)
        assert abs(p[0, 0] - 0.5) < 1e-6

        h = run("heatmap", x)
        assert h.shape == (n, 1, 8, 8), h.shape
        want = x.reshape(n, 1, 8, 8, 8, 8).mean(axis=(3, 5), dtype=np.float64)
        assert np.allclose(h, want, atol=1e-6)

        y = run("yolo", x)
        assert y.shape == (n, 5, 4), y.shape
        assert np.array_equal(y, np.broadcast_to(np.array(YOLO_OUT, dtype=np.float32), (n, 5, 4)))

    fixed = [run("classifier", np.full((1, 1, SIZE, SIZE), v, np.float32))[0, 0] for v in (0.0, 0.5, 1.0)]
    assert np.allclose(fixed, [0.01798621, 0.5, 0.98201379], atol=1e-6), fixed
    sq = np.zeros((1, 1, SIZE, SIZE), np.float32)
    sq[0, 0, 16:32, 40:56] = 1.0
    hot = np.argwhere(run("heatmap", sq)[0, 0] > 0).tolist()
    assert hot == [[2, 5], [2, 6], [3, 5], [3, 6]], hot
    # IoU of candidates 0 and 1, as documented
    b0 = (12, 12, 28, 28)
    b1 = (14, 13, 30, 29)
    inter = (min(b0[2], b1[2]) - max(b0[0], b1[0])) * (min(b0[3], b1[3]) - max(b0[1], b1[1]))
    assert inter == 210 and abs(inter / (256 + 256 - inter) - 0.695) < 1e-3
    print(f"check: all three models run with onnxruntime {ort.__version__} and match their formulas")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    write_all()
    if args.check:
        check()


if __name__ == "__main__":
    main()
