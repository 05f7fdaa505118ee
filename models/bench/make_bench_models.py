"""Models of realistic size for `fxtriage bench inference`, with RANDOM weights.

    python make_bench_models.py OUT_DIR

Writes two model directories (model.onnx and manifest.toml) under OUT_DIR:

resnet50-512  a ResNet-50 classifier (bottleneck blocks 3-4-6-3, widths
              64-128-256-512, expansion 4; 23.5 million parameters) on a
              512x512 single-channel input, output `prob` [N,1] (classifier)
yolo-s-640    a YOLOv8s-sized single-class detector (a strided convolutional
              backbone with residual blocks and heads at strides 8, 16 and 32;
              about 12 million parameters) on a 640x640 input, output
              `output0` [N,5,8400] (cx, cy, w, h, score; format yolo)

They exist to measure speed with a model whose cost is like a real product's,
not to detect anything: the weights are random numbers (seeded, so the files
are the same on every run), batch normalisation is folded away as an exported
model's would be, and their outputs mean nothing. They are never shipped and
never called fracture models. Built with the `onnx` package's helper API and
numpy only (no training framework), opset 17, IR version 8, batch dimension N
dynamic.
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


class Graph:
    def __init__(self, seed: int) -> None:
        self.random = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0
        self.parameters = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, array: np.ndarray, prefix: str) -> str:
        name = self.name(prefix)
        self.weights.append(numpy_helper.from_array(array, name))
        self.parameters += array.size
        return name

    def conv(self, x: str, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True, gain: float = 1.0) -> str:
        # He initialisation, scaled by `gain`; a bias stands for folded batch norm.
        std = gain * np.sqrt(2.0 / (cin * kernel * kernel))
        weight = (self.random.standard_normal((cout, cin, kernel, kernel)) * std).astype(np.float32)
        bias = np.zeros(cout, dtype=np.float32)
        out = self.name("conv")
        pad = kernel // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.constant(weight, "w"), self.constant(bias, "b")],
                [out],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        return self.op("Relu", [out]) if relu else out

    def op(self, kind: str, inputs: list[str], **attributes) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attributes))
        return out

    def model(self, name: str, size: int, output: str, output_shape: list) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            self.weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        model.producer_name = "fxtriage make_bench_models.py"
        onnx.checker.check_model(model)
        return model


def resnet50(size: int = 512) -> tuple[onnx.ModelProto, int]:
    g = Graph(seed=50)
    x = g.conv("image", 1, 64, 7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            y = g.conv(x, cin, width, 1)
            y = g.conv(y, width, width, 3, stride=stride)
            # The residual branch starts small, so activations stay finite
            # through 16 blocks without batch normalisation.
            y = g.conv(y, width, width * 4, 1, relu=False, gain=0.2)
            shortcut = x if block > 0 else g.conv(x, cin, width * 4, 1, stride=stride, relu=False)
            x = g.op("Relu", [g.op("Add", [y, shortcut])])
            cin = width * 4
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    weight = (g.random.standard_normal((1, cin)) * 0.01).astype(np.float32)
    bias = np.zeros(1, dtype=np.float32)
    x = g.op("Gemm", [x, g.constant(weight, "fc"), g.constant(bias, "fcb")], transB=1)
    prob = "prob"
    g.nodes.append(helper.make_node("Sigmoid", [x], [prob]))
    return g.model("resnet50-512", size, prob, ["N", 1]), g.parameters


def yolo_s(size: int = 640) -> tuple[onnx.ModelProto, int]:
    g = Graph(seed=8)

    def residual(x: str, channels: int, count: int) -> str:
        for _ in range(count):
            y = g.conv(x, channels, channels, 3)
            y = g.conv(y, channels, channels, 3, relu=False, gain=0.2)
            x = g.op("Relu", [g.op("Add", [x, y])])
        return x

    x = g.conv("image", 1, 32, 3, stride=2)  # /2
    x = g.conv(x, 32, 64, 3, stride=2)  # /4
    x = residual(x, 64, 1)
    p3 = residual(g.conv(x, 64, 128, 3, stride=2), 128, 2)  # /8
    p4 = residual(g.conv(p3, 128, 256, 3, stride=2), 256, 2)  # /16
    p5 = residual(g.conv(p4, 256, 512, 3, stride=2), 512, 1)  # /32
    rows = []
    for feature, channels in [(p3, 128), (p4, 256), (p5, 512)]:
        head = g.conv(feature, channels, channels, 3)
        head = g.conv(head, channels, 5, 1, relu=False, gain=0.1)
        shape = g.constant(np.array([0, 5, -1], dtype=np.int64), "shape")
        g.parameters -= 3
        rows.append(g.op("Reshape", [head, shape]))
    raw = g.op("Concat", rows, axis=2)  # [N, 5, 8400]
    # Boxes (rows 0-3) in input pixels, the score (row 4) in 0..1, as an
    # exported YOLOv8 gives them.
    starts = g.constant(np.array([0], dtype=np.int64), "s")
    middle = g.constant(np.array([4], dtype=np.int64), "m")
    end = g.constant(np.array([5], dtype=np.int64), "e")
    axis = g.constant(np.array([1], dtype=np.int64), "a")
    g.parameters -= 4
    boxes = g.op("Slice", [raw, starts, middle, axis])
    boxes = g.op("Mul", [g.op("Sigmoid", [boxes]), g.constant(np.array(float(size), dtype=np.float32), "scale")])
    g.parameters -= 1
    scores = g.op("Sigmoid", [g.op("Slice", [raw, middle, end, axis])])
    output = "output0"
    g.nodes.append(helper.make_node("Concat", [boxes, scores], [output], axis=1))
    return g.model("yolo-s-640", size, output, ["N", 5, 8400]), g.parameters


MANIFEST = """\
# fxtriage model manifest, written by models/bench/make_bench_models.py.
name = "{name}"
version = "0.0.1"
intended_use = "Benchmark only: RANDOM weights, {parameters} parameters, to measure the pipeline's speed with a model of realistic size. Detects nothing; not a fracture model; never shipped; not a medical device."
trained_on = "nothing: random weights (seeded) from models/bench/make_bench_models.py"

[weights]
file = "model.onnx"
sha256 = "{sha256}"

[input]
name = "image"
size = {size}
channels = 1
mean = 0.0
std = 1.0

[output]
name = "{output}"
format = "{format}"
stride = {stride}
box_threshold = 0.5
nms_iou = 0.45
classes = ["finding"]

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
"""


def write(out: str, name: str, model: onnx.ModelProto, parameters: int, size: int, output: str, format: str) -> None:
    directory = os.path.join(out, name)
    os.makedirs(directory, exist_ok=True)
    data = model.SerializeToString()
    with open(os.path.join(directory, "model.onnx"), "wb") as handle:
        handle.write(data)
    with open(os.path.join(directory, "manifest.toml"), "w") as handle:
        handle.write(
            MANIFEST.format(
                name=name,
                parameters=f"{parameters:,}",
                sha256=hashlib.sha256(data).hexdigest(),
                size=size,
                output=output,
                format=format,
                stride=size if format == "classifier" else 1,
            )
        )
    print(f"{directory}: {parameters:,} parameters, {len(data) / 1e6:.1f} MB")


def main() -> None:
    out = sys.argv[1]
    model, parameters = resnet50()
    write(out, "resnet50-512", model, parameters, 512, "prob", "classifier")
    model, parameters = yolo_s()
    write(out, "yolo-s-640", model, parameters, 640, "output0", "yolo")


if __name__ == "__main__":
    main()
