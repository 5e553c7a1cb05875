"""Checkpoint loading against hostile and damaged files: each is one UnsupportedModelError with a
one-line reason, nothing is allocated from lying metadata, and no pickled code ever runs."""

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from pixbatch.models import UnsupportedModelError, build_registered, create_model
from pixbatch.models.checkpoint import METADATA_KEY


def raw_safetensors(path, header: dict, body: bytes):
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)
    return path


class Canary:
    """Unpickling this runs a shell command that creates the canary file."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def hostile_checkpoints(folder, good):
    """name -> path of damaged, lying or malicious checkpoints built from a good one of ours."""
    folder.mkdir(exist_ok=True)
    tensors = load_file(str(good))
    config = {"name": "edsr_tiny_x2", "kwargs": {"n_resblocks": 2, "n_feats": 8}, "scale": 2}
    files = {}

    def ours(name, tensors=tensors, config=config):
        meta = {METADATA_KEY: config if isinstance(config, str) else json.dumps(config)}
        save_file(tensors, str(folder / f"{name}.safetensors"), metadata=meta)
        files[name] = folder / f"{name}.safetensors"

    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "empty.pth").write_bytes(b"")
    files["empty.safetensors"], files["empty.pth"] = folder / "empty.safetensors", folder / "empty.pth"
    files["huge_header"] = folder / "huge_header.safetensors"
    files["huge_header"].write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    files["bad_json"] = folder / "bad_json.safetensors"
    head = b"{not json"
    files["bad_json"].write_bytes(struct.pack("<Q", len(head)) + head)
    f32 = {"dtype": "F32"}
    files["offsets_out_of_bounds"] = raw_safetensors(folder / "oob.safetensors",
                                                     {"w": {**f32, "shape": [4], "data_offsets": [0, 10 ** 9]}}, bytes(16))
    files["overlapping_offsets"] = raw_safetensors(folder / "overlap.safetensors", {
        "a": {**f32, "shape": [4], "data_offsets": [0, 16]}, "b": {**f32, "shape": [4], "data_offsets": [8, 24]}},
        bytes(24))
    files["dtype_lie"] = raw_safetensors(folder / "dtype.safetensors",
                                         {"w": {"dtype": "F64", "shape": [4], "data_offsets": [0, 16]}}, bytes(16))
    files["shape_lie"] = raw_safetensors(folder / "shape.safetensors",
                                         {"w": {**f32, "shape": [1000, 1000], "data_offsets": [0, 16]}}, bytes(16))
    files["unknown_dtype"] = raw_safetensors(folder / "unk.safetensors",
                                             {"w": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}, bytes(16))
    data = good.read_bytes()
    files["truncated"] = folder / "truncated.safetensors"
    files["truncated"].write_bytes(data[: len(data) // 2])
    noise = os.urandom(4096)
    (folder / "noise.safetensors").write_bytes(noise)
    (folder / "noise.pth").write_bytes(noise)
    files["noise.safetensors"], files["noise.pth"] = folder / "noise.safetensors", folder / "noise.pth"
    ours("meta_not_json", config="{oops")
    ours("meta_a_list", config="[1, 2]")
    ours("meta_huge_model", config={**config, "kwargs": {"n_resblocks": 2, "n_feats": 200000}})
    ours("meta_unknown_arch", config={**config, "name": "nope_x9"})
    ours("meta_bad_kwarg_type", config={**config, "kwargs": {"n_feats": "eight"}})
    ours("meta_unknown_kwarg", config={**config, "kwargs": {"n_feats": 8, "colour": "blue"}})
    ours("missing_key", tensors={k: v for i, (k, v) in enumerate(tensors.items()) if i != 3})
    ours("extra_key", tensors={**tensors, "stowaway.weight": torch.zeros(3)})
    first = next(iter(tensors))
    ours("wrong_shape", tensors={**tensors, first: torch.zeros(1, 2, 3)})
    ours("nan_weights", tensors={**tensors, first: torch.full_like(tensors[first], float("nan"))})
    ours("inf_weights", tensors={**tensors, first: torch.full_like(tensors[first], float("inf"))})
    imdn = build_registered("imdn_x2").state_dict()
    imdn["IMDB1.c1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(imdn, folder / "imdn_wrong_shape.pth")
    files["imdn_wrong_shape"] = folder / "imdn_wrong_shape.pth"
    ours("meta_names_another_arch", config={**config, "name": "rlfn_x4", "kwargs": {}})  # EDSR tensors
    rlfn = {"params_ema": build_registered("rlfn_x4").state_dict()}  # BasicSR's wrapper, one shape wrong
    rlfn["params_ema"]["block_2.c2_r.weight"] = torch.zeros(48, 48, 1, 1)
    torch.save(rlfn, folder / "rlfn_wrong_shape.pth")
    files["rlfn_wrong_shape"] = folder / "rlfn_wrong_shape.pth"
    canary = folder / "CANARY"
    torch.save({"w": Canary(canary)}, folder / "code_zip.pth")
    with open(folder / "code_legacy.pth", "wb") as f:
        pickle.dump({"w": Canary(canary)}, f, protocol=2)
    with open(folder / "code_no_suffix", "wb") as f:
        pickle.dump(Canary(canary), f, protocol=pickle.HIGHEST_PROTOCOL)
    files.update(code_zip=folder / "code_zip.pth", code_legacy=folder / "code_legacy.pth",
                 code_no_suffix=folder / "code_no_suffix")
    for protocol in (0, 1, 3, 5):  # every pickle protocol, bare and inside torch's zip format
        with open(folder / f"code_p{protocol}.pt", "wb") as f:
            pickle.dump({"w": Canary(canary)}, f, protocol=protocol)
        files[f"code_p{protocol}"] = folder / f"code_p{protocol}.pt"
    torch.save({"conv1.conv2d.weight": Canary(canary)}, folder / "code_style.pth", pickle_protocol=5)
    files["code_style"] = folder / "code_style.pth"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), str(folder / "torchscript.pth"))
    files["torchscript"] = folder / "torchscript.pth"
    return files, canary


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_checkpoint):
    return hostile_checkpoints(tmp_path_factory.mktemp("hostile"), tiny_checkpoint)


EXPECTED = {  # a fragment of each reason: what a user reads
    "empty.safetensors": "empty file", "empty.pth": "empty file",
    "huge_header": "not a valid safetensors file", "bad_json": "not a valid safetensors file",
    "offsets_out_of_bounds": "not a valid safetensors file", "overlapping_offsets": "not a valid safetensors file",
    "dtype_lie": "not a valid safetensors file", "shape_lie": "not a valid safetensors file",
    "unknown_dtype": "not a valid safetensors file", "truncated": "not a valid safetensors file",
    "noise.safetensors": "not a valid safetensors file", "noise.pth": "cannot be read as plain weights",
    "meta_not_json": "metadata is not JSON", "meta_a_list": "does not name an architecture",
    "meta_huge_model": "its tensors do not fit edsr_tiny_x2", "meta_unknown_arch": "cannot build nope_x9",
    "meta_bad_kwarg_type": "cannot build edsr_tiny_x2", "meta_unknown_kwarg": "cannot build edsr_tiny_x2",
    "missing_key": "1 missing", "extra_key": "1 unexpected (e.g. stowaway.weight)", "wrong_shape": "1 wrong shape",
    "nan_weights": "hold NaN or Inf values", "inf_weights": "hold NaN or Inf values",
    "imdn_wrong_shape": "its tensors do not fit imdn_x2: 1 wrong shape (e.g. IMDB1.c1.weight)",
    "meta_names_another_arch": "its tensors do not fit rlfn_x4",
    "rlfn_wrong_shape": "its tensors do not fit rlfn_x4: 1 wrong shape (e.g. block_2.c2_r.weight)",
    "code_zip": "cannot be read as plain weights", "code_legacy": "cannot be read as plain weights",
    "code_no_suffix": "cannot be read as plain weights",
    **{f"code_p{p}": "cannot be read as plain weights" for p in (0, 1, 3, 5)},
    "code_style": "cannot be read as plain weights", "torchscript": "cannot be read as plain weights",
}


def test_every_hostile_file_is_one_clear_error_and_no_code_runs(hostile):
    files, canary = hostile
    assert set(files) == set(EXPECTED)
    for name, path in files.items():
        with pytest.raises(UnsupportedModelError) as info:
            create_model(path)
        message = str(info.value)
        assert EXPECTED[name] in message, (name, message)
        assert "\n" not in message and message.startswith(str(path)), (name, message)
    assert not canary.exists()


def test_metadata_cannot_make_pixbatch_allocate(hostile, monkeypatch):
    """n_feats=200000 would be a 1.4 TB model: it is refused from shapes on the meta device."""
    files, _ = hostile
    sizes = []
    real_empty = torch.empty

    def watch(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.device.type != "meta":
            sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch, "empty", watch)
    with pytest.raises(UnsupportedModelError, match="do not fit"):
        create_model(files["meta_huge_model"])
    assert max(sizes, default=0) < 10 ** 7


def test_good_checkpoints_still_load(tiny_checkpoint):
    loaded = create_model(tiny_checkpoint)
    assert loaded.info.scale == 2 and loaded.info.source == "checkpoint"
