"""Minimal safetensors writer/reader used by Recur's fixture generator.

File layout (the public safetensors format):
  * 8 bytes: little-endian unsigned 64-bit length N of the header;
  * N bytes: UTF-8 JSON object mapping tensor name -> {"dtype", "shape",
    "data_offsets": [begin, end]} (offsets relative to the start of the data
    section), plus an optional "__metadata__" object of string -> string;
  * the data section: raw little-endian, C-contiguous tensor bytes.

The writer is deterministic: tensors are laid out in sorted-name order, the
JSON is compact with a fixed key order, and the header is padded with spaces to
a multiple of 8 bytes (as the reference implementation does), so the same
inputs always give byte-identical files.

Supported dtypes: F32, F16, BF16, I64, I32 (what the Recur fixtures need).
"""

import json
import struct

import numpy as np
import torch

# safetensors dtype tag -> (torch dtype, numpy dtype used for the raw bytes)
# BF16 has no numpy dtype; its bytes travel as little-endian int16.
_DTYPES = {
    "F32": (torch.float32, np.dtype("<f4")),
    "F16": (torch.float16, np.dtype("<f2")),
    "BF16": (torch.bfloat16, np.dtype("<i2")),
    "I64": (torch.int64, np.dtype("<i8")),
    "I32": (torch.int32, np.dtype("<i4")),
}
_TORCH_TO_TAG = {v[0]: k for k, v in _DTYPES.items()}


def _tensor_bytes(t):
    tag = _TORCH_TO_TAG.get(t.dtype)
    if tag is None:
        raise TypeError(f"unsupported dtype {t.dtype}")
    t = t.detach().cpu().contiguous()
    if tag == "BF16":
        t = t.view(torch.int16)
    arr = t.numpy().astype(_DTYPES[tag][1], copy=False)
    return tag, arr.tobytes(order="C")


def save_file(tensors, path, metadata=None):
    """Write a dict name -> torch.Tensor to `path` in safetensors format."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise ValueError("reserved tensor name")
        t = tensors[name]
        tag, raw = _tensor_bytes(t)
        header[name] = {
            "dtype": tag,
            "shape": [int(s) for s in t.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


def load_file(path):
    """Read a safetensors file; returns (dict name -> torch.Tensor, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {}) or {}
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        tag = info["dtype"]
        if tag not in _DTYPES:
            raise TypeError(f"{name}: unsupported dtype {tag}")
        tdtype, npdtype = _DTYPES[tag]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * npdtype.itemsize:
            raise ValueError(f"{name}: byte range does not match shape {shape}")
        arr = np.frombuffer(body, dtype=npdtype, count=count, offset=begin).copy()
        t = torch.from_numpy(arr.reshape(shape))
        if tag == "BF16":
            t = t.view(torch.bfloat16)
        out[name] = t
    return out, metadata
