"""Small ONNX face models built in code, laid out like insightface's buffalo_l pack.

insightface's model_zoo routes a model by its graph: 9 outputs make it an SCRFD detector (3 strides x score,
box, 5 landmarks, 2 anchors per cell), a square >= 112 input with one output an ArcFace recognizer. These two do
real arithmetic on synthetic pictures: a "face" is a bright axis-aligned square on a dark background.

Detector: a pixel is "bright" when its brightest channel is above mid-grey. At each anchor, four line
convolutions count the bright pixels running left, up, right and down from it; inside a square those runs end
exactly on the square's edges, so every anchor inside a face predicts the face's exact box (NMS keeps one) and
the five landmarks sit where ArcFace's template expects them, so alignment maps the square onto the whole crop.
Faces must lie further apart than `REACH` pixels. Recognizer: the aligned crop averaged into an 8x8 colour grid,
projected to 512 floats by a fixed random matrix: same colours, same embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DETECTOR_SIZE = 128  # the detector's fixed input: test pictures are 128x128, so no letterboxing
REACH = 64  # longest run the line convolutions count: face side and gap between faces
STRIDES = (8, 16, 32)
ANCHORS = 2
# ArcFace's 5-point template in a 112x112 crop, as fractions of the box.
TEMPLATE = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        dtype=np.float32,
    )
    / 112.0
)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name=name)


def build_detector(path: Path) -> Path:
    size, reach = DETECTOR_SIZE, REACH
    kernel = 2 * reach + 1
    runs = np.zeros((4, 1, kernel, kernel), dtype=np.float32)  # left, up, right, down (each includes the centre)
    runs[0, 0, reach, : reach + 1] = 1.0
    runs[1, 0, : reach + 1, reach] = 1.0
    runs[2, 0, reach, reach:] = 1.0
    runs[3, 0, reach:, reach] = 1.0
    # Runs -> distances from the anchor to the box edges in pixels: left/top exclude the anchor's own pixel.
    to_box = np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1)
    to_box_bias = np.array([-1.0, -1.0, 0.0, 0.0], dtype=np.float32)
    # Landmark k at box fraction (fx, fy): x = cx - l + fx * (l + r)  ->  offset = (fx - 1) * l + fx * r.
    to_kps = np.zeros((10, 4, 1, 1), dtype=np.float32)
    for k, (fx, fy) in enumerate(TEMPLATE):
        to_kps[2 * k, 0], to_kps[2 * k, 2] = fx - 1.0, fx
        to_kps[2 * k + 1, 1], to_kps[2 * k + 1, 3] = fy - 1.0, fy

    initializers = [
        _const("runs", runs),
        _const("to_box", to_box),
        _const("to_box_bias", to_box_bias),
        _const("to_kps", to_kps),
        _const("zero", np.array(0.0, dtype=np.float32)),
        _const("pick", np.ones((1, 1, 1, 1), dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["input.1"], ["brightest"], name="brightest", axes=[1], keepdims=1),
        helper.make_node("Greater", ["brightest", "zero"], ["is_bright"], name="threshold"),
        helper.make_node("Cast", ["is_bright"], ["mask"], name="mask", to=TensorProto.FLOAT),
    ]
    outputs = {"score": [], "bbox": [], "kps": []}
    for stride in STRIDES:
        cells = (size // stride) ** 2
        s = f"_{stride}"
        nodes += [
            # Anchor (i, j) sits on pixel (i * stride, j * stride): a 1x1 strided conv reads the mask there.
            helper.make_node("Conv", ["mask", "pick"], ["score_map" + s], name="score" + s, strides=[stride] * 2),
            helper.make_node(
                "Conv", ["mask", "runs"], ["runs" + s], name="runs" + s, strides=[stride] * 2, pads=[reach] * 4
            ),
            helper.make_node("Conv", ["runs" + s, "to_box", "to_box_bias"], ["box_px" + s], name="box" + s),
            helper.make_node("Conv", ["box_px" + s, "to_kps"], ["kps_px" + s], name="kps" + s),
        ]
        initializers.append(_const("inv_stride" + s, np.array(1.0 / stride, dtype=np.float32)))
        nodes += [
            helper.make_node("Mul", ["box_px" + s, "inv_stride" + s], ["bbox_map" + s], name="bbox_scale" + s),
            helper.make_node("Mul", ["kps_px" + s, "inv_stride" + s], ["kps_map" + s], name="kps_scale" + s),
        ]
        for head, channels in (("score", 1), ("bbox", 4), ("kps", 10)):
            # [1, C, h, w] -> [h*w, C] row-major cells -> each cell twice (SCRFD's 2 anchors) -> [h*w*2, C]
            name = f"{head}{s}"
            initializers += [
                _const(name + "_flat", np.array([channels, -1], dtype=np.int64)),
                _const(name + "_rows", np.array([-1, channels], dtype=np.int64)),
                _const(name + "_axis", np.array([1], dtype=np.int64)),
            ]
            nodes += [
                helper.make_node("Reshape", [f"{head}_map{s}", name + "_flat"], [name + "_cf"], name=name + "_r1"),
                helper.make_node("Transpose", [name + "_cf"], [name + "_t"], name=name + "_t", perm=[1, 0]),
                helper.make_node("Unsqueeze", [name + "_t", name + "_axis"], [name + "_u"], name=name + "_u"),
                helper.make_node("Concat", [name + "_u"] * ANCHORS, [name + "_a"], name=name + "_a", axis=1),
                helper.make_node("Reshape", [name + "_a", name + "_rows"], [name], name=name + "_r2"),
            ]
            outputs[head].append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [cells * ANCHORS, channels]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_recognizer(path: Path, seed: int = 0) -> Path:
    projection = np.random.default_rng(seed).standard_normal((3 * 8 * 8, 512)).astype(np.float32)
    # Node names avoid "Sub"/"Mul" prefixes: ArcFaceONNX reads those as an MXNet model with built-in normalisation.
    nodes = [
        helper.make_node("AveragePool", ["data"], ["grid"], name="grid", kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["grid"], ["flat"], name="flat", axis=1),
        helper.make_node("Gemm", ["flat", "projection"], ["fc1"], name="embed"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["batch", 512])],
        initializer=[_const("projection", projection)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_face_pack(model_dir: Path, pack: str = "buffalo_l") -> Path:
    """Write `<model_dir>/<pack>/det_10g.onnx` and `w600k_r50.onnx`; return model_dir."""
    pack_dir = Path(model_dir) / pack
    pack_dir.mkdir(parents=True, exist_ok=True)
    build_detector(pack_dir / "det_10g.onnx")
    build_recognizer(pack_dir / "w600k_r50.onnx")
    return Path(model_dir)


def face_picture(
    squares: list[tuple[int, int, int, tuple[int, int, int]]], size: int = DETECTOR_SIZE, background: int = 20
) -> np.ndarray:
    """An RGB uint8 picture with bright squares `(x, y, side, colour)` on a dark background."""
    image = np.full((size, size, 3), background, dtype=np.uint8)
    for x, y, side, colour in squares:
        image[y : y + side, x : x + side] = colour
        # A darker-but-still-bright lower half: gives the recognizer something besides one flat colour.
        image[y + side // 2 : y + side, x : x + side] = [max(c * 3 // 4, 140) if c > 128 else c for c in colour]
    return image
