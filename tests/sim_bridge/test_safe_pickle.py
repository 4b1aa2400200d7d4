"""The restricted unpickler: what real data holds loads, what runs code or exhausts memory is refused,
and no corruption of a real file makes it (or ``validate``) fail with anything but our documented errors."""

from __future__ import annotations

import collections
import copy
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim_bridge import safe_pickle
from sim_bridge.safe_pickle import (LOAD_ERRORS, ResourceLimitError, UnsafePickleError, safe_load,
                                    safe_loads)
from sim_bridge.scenario import Scenario, ScenarioError, load_scenario

DOCUMENTED = (ScenarioError, *LOAD_ERRORS)


class _Reduce:
    """Pickles as ``fn(*args)``: the way a hostile file names a callable."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


# ---- what real ScenarioNet / MetaDrive files hold ------------------------------------------------
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_defaultdict_ordereddict_numpy_load_in_every_protocol(protocol):
    data = {"counts": collections.defaultdict(int, {"VEHICLE": 3}), "order": collections.OrderedDict(b=1, a=2),
            "lists": collections.defaultdict(list), "arr": np.arange(12, dtype=np.float32).reshape(3, 4),
            "scalar": np.float64(2.5), "types": {"VEHICLE", "CYCLIST"}, "raw": b"\x00\xff", "bits": bytearray(b"ab")}
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    assert type(out["counts"]) is collections.defaultdict and out["counts"].default_factory is int
    assert out["counts"]["VEHICLE"] == 3 and out["counts"]["missing"] == 0
    assert type(out["order"]) is collections.OrderedDict and list(out["order"]) == ["b", "a"]
    assert out["lists"]["x"] == []
    np.testing.assert_array_equal(out["arr"], data["arr"])
    assert out["arr"].dtype == np.float32 and out["scalar"] == 2.5 and out["types"] == data["types"]
    assert out["raw"] == b"\x00\xff" and out["bits"] == bytearray(b"ab")


def test_numpy_1_and_2_module_paths():
    """numpy 2 writes ``numpy._core``, numpy 1 ``numpy.core``: both load under either numpy."""
    blob = pickle.dumps({"a": np.arange(5.0), "s": np.int64(7)}, protocol=2)  # GLOBAL opcodes: plain text
    core, private = b"numpy.core.multiarray", b"numpy._core.multiarray"
    variants = {blob.replace(private, core), blob.replace(core, private)}
    assert len(variants) == 2
    for v in variants:
        out = safe_loads(v)
        np.testing.assert_array_equal(out["a"], np.arange(5.0)) and out["s"] == 7


def test_metadrive_summary_helpers_output_loads():
    """MetaDrive's own number summary writes ``defaultdict(int)``; it loads as data."""
    md = pytest.importorskip("metadrive.scenario.scenario_description")
    from tests.conftest import make_straight_road_scenario

    sd = md.ScenarioDescription(make_straight_road_scenario())
    summary = md.ScenarioDescription.get_number_summary(sd)
    assert isinstance(summary["num_moving_objects_each_type"], collections.defaultdict)
    out = safe_loads(pickle.dumps(summary))
    assert out["num_moving_objects_each_type"] == summary["num_moving_objects_each_type"]


# ---- what runs code -----------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [os.system, eval, getattr, collections.OrderedDict, np.dtype, Path])
def test_defaultdict_with_a_foreign_factory_is_refused(factory, tmp_path):
    blob = pickle.dumps(collections.defaultdict(factory))
    with pytest.raises(UnsafePickleError, match="refused to load"):
        safe_loads(blob, "f.pkl")


def test_codecs_only_latin1():
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps(_Reduce(__import__("_codecs").encode, "eA==", "base64")))
    # latin1, as protocol 2 writes bytes, is allowed
    assert safe_loads(pickle.dumps(b"\x01\x02", protocol=2)) == b"\x01\x02"


# ---- resource limits ------------------------------------------------------------------------------
_HUGE = 10**6
_core = pytest.importorskip("numpy.core.multiarray")


@pytest.mark.parametrize("payload", [
    _Reduce(np.ndarray, (_HUGE, _HUGE)),                              # numpy.ndarray(shape) allocates
    _Reduce(_core._reconstruct, np.ndarray, (_HUGE, _HUGE), b"b"),   # the array-pickle path
    _Reduce(bytearray, 10**12),
    _Reduce(bytes, 10**12),
    _Reduce(list, range(10**12)),
    _Reduce(_core.scalar, np.dtype(("V", 2**30))),                  # a 1 GiB void scalar
], ids=["ndarray", "reconstruct", "bytearray", "bytes", "range", "scalar"])
def test_gigantic_declarations_refused_before_allocation(payload):
    blob = pickle.dumps({"x": payload}, protocol=4)
    assert len(blob) < 1000
    with pytest.raises(ResourceLimitError, match=r"f\.pkl: refused to load: .*above the limit of 268,435,456 bytes"):
        safe_loads(blob, "f.pkl")


def test_file_size_limit(tmp_path, monkeypatch):
    p = tmp_path / "sd_big.pkl"
    p.write_bytes(pickle.dumps({"a": np.zeros(1000)}))
    monkeypatch.setattr(safe_pickle, "MAX_FILE_BYTES", 1024)
    with pytest.raises(ResourceLimitError, match=r"sd_big\.pkl: refused to load: \d[\d,]* bytes, above the limit"):
        safe_load(p)


def test_real_arrays_are_far_below_the_limit(real_dir):
    largest = 0
    for p in sorted(real_dir.glob("sd_*.pkl")):
        stack = [safe_load(p)]
        while stack:
            o = stack.pop()
            if isinstance(o, dict):
                stack.extend(o.values())
            elif isinstance(o, (list, tuple)):
                stack.extend(o)
            elif isinstance(o, np.ndarray):
                largest = max(largest, o.nbytes)
    assert 0 < largest < safe_pickle.MAX_ARRAY_BYTES / 50


# ---- fuzzing: only documented errors, the file named ----------------------------------------------
def _mutate(d: dict, rng: random.Random) -> dict:
    """One random structural mutation of a scenario dict (a key dropped, a type or shape changed)."""
    d = copy.deepcopy(d)
    path, node = [], d
    while isinstance(node, dict) and node and rng.random() < 0.8:
        key = rng.choice(list(node))
        path.append(key)
        parent, node = node, node[key]
    if not path:
        return {"id": 1} if rng.random() < 0.5 else []
    replacements = [None, 0, -1, 1e308, float("nan"), "x", [], {}, [1, "a"], np.zeros((0,)), np.zeros((2, 7, 5)),
                    np.full(3, np.inf), np.array(["a", "b"]), np.zeros(4, np.complex64), {"state": None}, (1, 2)]
    op = rng.random()
    if op < 0.3:
        del parent[path[-1]]
    elif op < 0.85:
        parent[path[-1]] = rng.choice(replacements)
    elif isinstance(node, np.ndarray) and node.size:
        parent[path[-1]] = node.reshape(-1)[: max(1, node.size // 2)]
    else:
        parent[rng.choice(replacements[:3]) or "extra"] = node
    return d


def _load_checked(blob: bytes, path: Path, repair: bool = False) -> bool:
    """Write ``blob`` as ``path`` and load + validate it. Returns whether it was refused; any error other
    than the documented ones (or one that does not name the file) fails the test."""
    path.write_bytes(blob)
    try:
        load_scenario(path, repair=repair)
        return False
    except DOCUMENTED as e:
        assert str(path) in str(e), f"error does not name the file: {e}"
        return True


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_fuzz_mutated_scenario_dicts(tmp_path, source):
    """2,000 structural mutations of a synthetic scenario and of a (shortened) real nuScenes scenario:
    load + validate raise only documented errors, each naming the file."""
    from tests.conftest import make_straight_road_scenario

    base = make_straight_road_scenario() if source == "synthetic" else safe_loads(_small_real_blob())
    rng = random.Random(0)
    path = tmp_path / "sd_fuzz.pkl"
    refused = 0
    for k in range(2000 if source == "synthetic" else 1000):
        d = _mutate(base, rng)
        for _ in range(rng.randint(0, 2)):
            d = _mutate(d, rng) if isinstance(d, dict) else d
        refused += _load_checked(pickle.dumps(d, protocol=rng.choice([2, 4, 5])), path, repair=k % 2 == 0)
    assert refused > 500  # most mutations break the contract; each was refused with the file named


def test_fuzz_mutated_real_scenarios(tmp_path, real_dir):
    """Mutations of every full real scenario (nuScenes and Waymo layouts)."""
    rng = random.Random(1)
    path = tmp_path / "sd_fuzz.pkl"
    refused = 0
    for p in sorted(real_dir.glob("sd_*.pkl")):
        d = safe_load(p)
        for _ in range(15):
            refused += _load_checked(pickle.dumps(_mutate(d, rng), protocol=4), path, repair=True)
    assert refused > 30


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_byte_corruptions(tmp_path, data):
    """Byte flips, insertions and truncations of real-shaped pickles: only documented errors."""
    blob = bytearray(_small_real_blob())
    n = data.draw(st.integers(1, 8))
    for _ in range(n):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, len(blob) - 1))
        if op == "flip":
            blob[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del blob[i:i + data.draw(st.integers(1, 16))]
        elif len(blob) > 2:
            del blob[max(1, i):]
        if not blob:
            blob = bytearray(b"\x80")
    _load_checked(bytes(blob), tmp_path / "sd_bytes.pkl")


_BLOB: list[bytes] = []


def _small_real_blob() -> bytes:
    """A real nuScenes scenario cut to 20 steps and 8 map features (a small file keeps fuzzing fast);
    the straight-road fixture if the shared data is absent."""
    if not _BLOB:
        from tests.conftest import REAL_DIR, make_straight_road_scenario

        path = REAL_DIR / "sd_nuscenes_v1.0-mini_scene-0916.pkl"
        if path.exists():
            d = safe_load(path)
            d["length"] = 20
            d["tracks"] = {k: {**t, "state": {s: v[:20] for s, v in t["state"].items()}}
                           for k, t in list(d["tracks"].items())[:6]}
            d["tracks"][d["metadata"]["sdc_id"]] = safe_load(path)["tracks"][d["metadata"]["sdc_id"]]
            d["tracks"][d["metadata"]["sdc_id"]]["state"] = {
                s: v[:20] for s, v in d["tracks"][d["metadata"]["sdc_id"]]["state"].items()}
            d["map_features"] = dict(list(d["map_features"].items())[:8])
            d["metadata"]["ts"] = d["metadata"]["ts"][:20]
            d["dynamic_map_states"] = {}
        else:
            d = make_straight_road_scenario(length=20)
        Scenario.from_dict(d, repair=True)  # the uncorrupted blob is valid
        _BLOB.append(pickle.dumps(d, protocol=4))
    return _BLOB[0]


def test_validate_command_survives_corrupt_files(tmp_path):
    """`bevgen scenarios validate` on a folder of corrupted files: one BAD line each, no traceback."""
    import subprocess
    import sys

    rng = random.Random(3)
    blob = _small_real_blob()
    for k in range(40):
        b = bytearray(blob)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        (tmp_path / f"sd_{k:02d}.pkl").write_bytes(bytes(b[: rng.randint(1, len(b))]) if k % 3 == 0 else bytes(b))
    res = subprocess.run([sys.executable, "-m", "bevgen.cli", "scenarios", "validate", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    good, bad = int(last.split()[0]), int(last.split()[2])
    assert good + bad == 40 and bad > 0 and res.returncode == 1
    assert all(line.startswith("BAD ") and "sd_" in line for line in res.stdout.strip().splitlines()[:-1])
