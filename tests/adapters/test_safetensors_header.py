"""The safetensors header check follows the format: 8-byte little-endian length, then bounded JSON. Any real file
passes whatever its header length's bytes are; hostile headers get a clear AdapterImportError, never a traceback."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from adapters.importing import MAX_HEADER_BYTES, AdapterImportError, check_safetensors_bytes

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int8: "I8", torch.uint8: "U8"}
tensor_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda name: name != "__metadata__"
)
tensors = st.dictionaries(
    tensor_names,
    st.tuples(st.lists(st.integers(0, 5), max_size=3), st.sampled_from(sorted(DTYPES, key=str))),
    min_size=1,
    max_size=12,
)
metadata = st.none() | st.dictionaries(st.text(max_size=20), st.text(max_size=300), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors, metadata)
def test_every_valid_file_passes(specs, meta):
    state = {name: torch.ones(shape, dtype=dtype) for name, (shape, dtype) in specs.items()}
    data = save(state, metadata=meta)
    header = check_safetensors_bytes(data, "random.safetensors")
    assert set(header) - {"__metadata__"} == set(specs)
    for name, (shape, dtype) in specs.items():
        assert header[name]["shape"] == shape and header[name]["dtype"] == DTYPES[dtype]
    assert set(load(data)) == set(specs)


def test_a_header_length_starting_with_0x80_is_not_taken_for_a_pickle():
    """0x80 is a pickle's first byte, and the low byte of about 1 in 32 real header lengths."""
    for padding in range(600):
        data = save({"w": torch.ones(2)}, metadata={"note": "x" * padding})
        if data[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length whose low byte is 0x80")
    header = check_safetensors_bytes(data, "lucky.safetensors")
    assert header["w"]["shape"] == [2]


def with_header(header: bytes, body: bytes = b"\0" * 8) -> bytes:
    return struct.pack("<Q", len(header)) + header + body


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_header(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "nested deeper than 8 levels"),
        (with_header(b'{"a":' + b"[" * 20 + b"]" * 20 + b"}"), "nested deeper than 8 levels"),
        (with_header(b'{"__metadata__": {"a": {"b": 1}}}'), "__metadata__ must map text to text"),
        (with_header(b'{"w": {"dtype": "F32", "shape": 7, "data_offsets": [0, 4]}}'), "bad dtype/shape"),
        (with_header(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": "ab"}}'), "bad dtype/shape"),
        (with_header(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}}'), "truncated or corrupt"),
        (with_header(b'{"w": 1}'), "bad entry"),
        (with_header(b"[1, 2]"), "corrupt safetensors header"),
        (with_header(b'{"\xff": 1}'), "UnicodeDecodeError"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{" + b" " * 64, "declared length"),
        (struct.pack("<Q", 4096) + b'{"a": 1}', "declared length"),  # longer than the file
        (struct.pack("<Q", 0) + b"{}", "declared length"),
        (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.", "PyTorch pickle"),
        (b"PK\x03\x04" + b"\0" * 40, "PyTorch pickle"),
        (b"\x80\x04", "PyTorch pickle"),
    ],
    ids=[
        "nested-100000",
        "nested-20",
        "metadata-not-text",
        "shape-not-list",
        "offsets-not-numbers",
        "offsets-past-end",
        "entry-not-object",
        "header-not-object",
        "not-utf8",
        "length-over-bound",
        "length-past-file",
        "length-zero",
        "pickle",
        "torch-zip",
        "short-pickle",
    ],
)
def test_hostile_headers_are_clear_refusals(data, message):
    with pytest.raises(AdapterImportError, match=message):
        check_safetensors_bytes(data, "hostile.safetensors")


def test_the_json_of_a_real_header_is_what_the_check_returns():
    data = save({"a": torch.zeros(3, 2)}, metadata={"format": "pt"})
    (length,) = struct.unpack("<Q", data[:8])
    assert check_safetensors_bytes(data) == json.loads(data[8 : 8 + length])
