#!/usr/bin/env python3
"""An independent safetensors reader/writer for spar's interop tests.

Uses only json + struct for the format and torch (for bf16/f16 decoding),
so it shares no code with spar's C++ reader and writer.

  read_safetensors.py dump PATH    PATH: a .safetensors file or an HF folder
                                   (model.safetensors, or shards + index).
                                   Prints JSON: {"files", "format",
                                   "total_size", "tensors": {name: {"dtype",
                                   "shape", "values"}}}; exits 1 on a format
                                   violation.
  read_safetensors.py write PATH   Writes a file of known tensors (header in
                                   name order, data in a different order) and
                                   prints the same JSON for it.
"""
import json
import os
import struct
import sys

import torch

DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def values_of(tensor):
    if tensor.dtype == torch.bool:
        return [int(v) for v in tensor.reshape(-1).tolist()]
    if tensor.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return tensor.reshape(-1).to(torch.float64).tolist()
    return tensor.reshape(-1).tolist()


def read_file(path):
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(f"{path}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        fail(f"{path}: header past end of file")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    if n % 8 != 0:
        fail(f"{path}: header length {n} is not a multiple of 8")
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {}) or {}
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    expected = 0
    tensors = {}
    for name, info in entries:
        begin, end = info["data_offsets"]
        if begin != expected:
            fail(f"{path}: tensor {name} begins at {begin}, expected {expected}")
        expected = end
        dtype, size = DTYPES[info["dtype"]]
        shape = info["shape"]
        count = 1
        for d in shape:
            count *= d
        if end - begin != count * size:
            fail(f"{path}: tensor {name} has {end - begin} bytes, expected {count * size}")
        if count == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(shape)
        tensors[name] = {"dtype": info["dtype"], "shape": shape, "values": values_of(tensor)}
    if expected != len(data):
        fail(f"{path}: tensors cover {expected} of {len(data)} data bytes")
    return metadata, tensors


def dump(path):
    result = {"files": [], "format": None, "total_size": None, "tensors": {}}
    if os.path.isdir(path):
        single = os.path.join(path, "model.safetensors")
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(single):
            files = {"model.safetensors": None}
        else:
            with open(index) as f:
                index_json = json.load(f)
            result["total_size"] = index_json["metadata"]["total_size"]
            files = {}
            for name, shard in index_json["weight_map"].items():
                files.setdefault(shard, []).append(name)
        for shard, expected_names in sorted(files.items()):
            metadata, tensors = read_file(os.path.join(path, shard))
            if expected_names is not None and sorted(expected_names) != sorted(tensors):
                fail(f"{shard}: holds {sorted(tensors)}, index says {sorted(expected_names)}")
            result["files"].append(shard)
            result["format"] = metadata.get("format")
            result["tensors"].update(tensors)
        if result["total_size"] is not None:
            total = 0
            for info in result["tensors"].values():
                count = 1
                for d in info["shape"]:
                    count *= d
                total += count * DTYPES[info["dtype"]][1]
            if total != result["total_size"]:
                fail(f"index total_size {result['total_size']} != {total}")
    else:
        metadata, tensors = read_file(path)
        result["files"].append(os.path.basename(path))
        result["format"] = metadata.get("format")
        result["tensors"] = tensors
    print(json.dumps(result))


def write(path):
    tensors = {
        "a.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4 - 0.5,
        "b.bf16": torch.tensor([1.5, -2.25, 0.00299072265625, 65280.0], dtype=torch.bfloat16),
        "c.i64": torch.tensor([[-(2 ** 40), 7], [0, 2 ** 50]], dtype=torch.int64),
        "d.u8": torch.tensor([0, 1, 254, 255], dtype=torch.uint8),
        "e.f16": torch.tensor([[0.5], [-1024.0], [0.0009765625]], dtype=torch.float16),
        "f.bool": torch.tensor([True, False, True], dtype=torch.bool),
        "g.i32.scalar": torch.tensor(-123456, dtype=torch.int32),
    }
    # Data in reverse name order, so header order and offset order differ.
    header = {"__metadata__": {"format": "pt", "writer": "python"}}
    blobs = []
    offset = 0
    for name in sorted(tensors, reverse=True):
        t = tensors[name].contiguous()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        dtype = [k for k, v in DTYPES.items() if v[0] == t.dtype][0]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(dict(sorted(header.items()))).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    dump(path)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("dump", "write"):
        fail(__doc__)
    if sys.argv[1] == "dump":
        dump(sys.argv[2])
    else:
        write(sys.argv[2])


if __name__ == "__main__":
    main()
