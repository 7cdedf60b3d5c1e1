"""refimpl.files: the atomic writer and the .npz / JSON readers under hostile files.

Each bad file is built by hand (zip members, .npy headers) so that the test
can state which lie the file tells; each case asserts the exception type and
that the message names the file and the offending field or member.
"""

import io
import json
import multiprocessing
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from refimpl import files
from refimpl.files import FileFormatError, read_json, read_npz, save_npz, write_text


def _npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=True)
    return buf.getvalue()


def _npy_claiming(shape, dtype="<f8", payload=b""):
    """A .npy member whose header claims ``shape`` but which stores ``payload``."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


# ---------------------------------------------------------------- the .npz reader

BAD_NPZ = [
    # (label, members or raw bytes, expected words in the message)
    ("random bytes", os.urandom(64), "not a"),
    ("text", b"hello, I am not an archive\n" * 4, "not a"),
    ("empty file", b"", "not a"),
    ("pickled object array", {"x.npy": _npy_bytes(np.array([{"a": 1}], dtype=object))},
     "'x'"),
    ("non-npy member", {"x.npy": _npy_bytes(np.zeros(2)), "evil.txt": b"hi"}, "evil.txt"),
    ("header claims 10^12 elements", {"x.npy": _npy_claiming((10**12,))}, "'x'"),
    ("header claims more than stored", {"x.npy": _npy_claiming((3,), payload=b"\0" * 16)},
     "'x'"),
    ("header claims less than stored", {"x.npy": _npy_claiming((1,), payload=b"\0" * 16)},
     "'x'"),
    ("garbage header", {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 42}    \n"}, "'x'"),
    ("not an npy at all", {"x.npy": b"just some bytes, no magic"}, "'x'"),
    ("complex dtype", {"x.npy": _npy_bytes(np.zeros(2, dtype=complex))}, "'x'"),
    ("bytes dtype", {"x.npy": _npy_bytes(np.array(b"abc"))}, "'x'"),
]


@pytest.mark.parametrize("label, content, words", BAD_NPZ, ids=[c[0] for c in BAD_NPZ])
def test_bad_npz_is_refused_naming_file_and_member(tmp_path, label, content, words):
    path = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        _zip(path, content)
    with pytest.raises(FileFormatError) as info:
        read_npz(path, "test file")
    message = str(info.value)
    assert str(path) in message and words in message
    assert "allow_pickle" not in message


def test_a_deflate_bomb_claim_is_refused_before_reading(tmp_path):
    # A deflated member whose zip header claims far more than deflate can expand to.
    path = _zip(tmp_path / "bomb.npz", {"x.npy": _npy_bytes(np.zeros(10))},
                compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    # file_size lives at offset 22 of the local header and 24 of the central record
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 2**31)
    struct.pack_into("<I", raw, central + 24, 2**31)
    path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="'x.npy' claims"):
        read_npz(path)


def test_a_corrupted_byte_is_caught_by_the_crc(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, x=np.arange(100.0))
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"PK\x01\x02") - 40] ^= 0xFF  # a byte of the data, before the directory
    path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="field 'x'"):
        read_npz(path)


def test_a_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False,
                                                  "shape": (1,)})
    member.write(pickle.dumps(np.array([Boom()], dtype=object)))
    path = _zip(tmp_path / "p.npz", {"x.npy": member.getvalue()})
    with pytest.raises(FileFormatError, match="never loads pickles"):
        read_npz(path)
    assert not (tmp_path / "pwned").exists()


def test_fields_names_kinds_format_and_finiteness_are_checked(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, format=np.array("fmt"), version=np.array(1), a=np.array([1.0, np.nan]))
    fields = {"format": "U", "version": "iu", "a": "f"}
    with pytest.raises(FileFormatError, match="field 'a' contains NaN"):
        read_npz(path, fields=fields)
    with pytest.raises(FileFormatError, match="unexpected field 'a'"):
        read_npz(path, fields={"format": "U", "version": "iu"})
    with pytest.raises(FileFormatError, match="'a' has dtype float64"):
        read_npz(path, fields={"format": "U", "version": "iu", "a": "i"})
    with pytest.raises(FileFormatError, match="format field is 'fmt', expected 'other'"):
        read_npz(path, fields=fields, file_format=("other", 1))
    with pytest.raises(FileFormatError, match="format version 1; this refimpl reads version 2"):
        read_npz(path, fields=fields, file_format=("fmt", 2))
    with pytest.raises(FileFormatError, match="lacks the field.*'b'"):
        read_npz(path, kinds="biufU", required=["b"], finite=False)
    with pytest.raises(FileFormatError, match="more than the 8 allowed"):
        read_npz(path, finite=False, max_bytes=8)
    contents = read_npz(path, fields=fields, finite=False)
    assert contents["a"].flags.writeable and contents.integer("version") == 1
    with pytest.raises(FileFormatError, match="field 'a' must be a single integer"):
        contents.integer("a")
    with pytest.raises(FileFormatError, match="field 'version' is 1; allowed range is"):
        contents.integer("version", minimum=2)
    with pytest.raises(FileFormatError, match="field 'format' must be a single number"):
        contents.real("format")
    with pytest.raises(FileFormatError, match="lacks the field 'zzz'"):
        contents.string("zzz")


def test_arrays_round_trip_exactly_with_every_layout(tmp_path):
    arrays = {"c": np.arange(12.0).reshape(3, 4), "f": np.asfortranarray(np.ones((2, 3))),
              "i": np.arange(5, dtype=np.int32), "s": np.array("text"), "b": np.array([True]),
              "big_endian": np.arange(3, dtype=">f8"), "empty": np.zeros((0, 3))}
    save_npz(tmp_path / "rt.npz", arrays)
    back = read_npz(tmp_path / "rt.npz")
    assert sorted(back) == sorted(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)
    np.savez_compressed(tmp_path / "z.npz", **arrays)  # deflated members read too
    np.testing.assert_array_equal(read_npz(tmp_path / "z.npz")["c"], arrays["c"])


def test_a_missing_file_is_an_oserror_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        read_npz(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(tmp_path / "nope.json")


# ---------------------------------------------------------------- the JSON reader

BAD_JSON = [
    ("nested 100 000 deep", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("nested 65 deep", b"[" * 65 + b"]" * 65, "nested 65 levels"),
    ("not utf-8", b'{"a": "\xff"}', "not UTF-8"),
    ("syntax error", b'{"a": 1,}', "line 1"),
    ("truncated", b'{"cases": {"x": [1, 2', "not valid JSON"),
    ("empty", b"", "not valid JSON"),
]


@pytest.mark.parametrize("label, content, words", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_is_refused_naming_the_file(tmp_path, label, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(FileFormatError) as info:
        read_json(path, "golden file")
    assert str(path) in str(info.value) and words in str(info.value)
    assert "golden file" in str(info.value)


def test_json_size_and_depth_bounds_are_parameters(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"a": [[1, 2], [3]]}))
    assert read_json(path) == {"a": [[1, 2], [3]]}
    with pytest.raises(FileFormatError, match="nested 3 levels"):
        read_json(path, max_depth=2)
    with pytest.raises(FileFormatError, match="larger than 5 bytes"):
        read_json(path, max_bytes=5)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_json(tmp_path)


# ---------------------------------------------------------------- the atomic writer

def _leftovers(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    write_text(path, "old")

    def fail(handle):
        handle.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, fail)
    assert path.read_text() == "old" and _leftovers(tmp_path) == []
    with pytest.raises(TypeError, match="field 'x' holds Python objects"):
        save_npz(path, {"x": np.array([object()])})
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def test_writing_to_a_folder_or_an_unwritable_place_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_text(tmp_path, "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):  # a parent that is a file: no folder can be made
        write_text(tmp_path / "file" / "sub" / "out.txt", "x")
    assert _leftovers(tmp_path) == []


def test_new_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    write_text(tmp_path / "p.txt", "x")
    assert os.stat(tmp_path / "p.txt").st_mode & 0o777 == 0o666 & ~umask


def _write_many(args):
    path, tag = args
    for i in range(40):
        write_text(path, f"{tag} {i}\n" * 100)
    return tag


def test_concurrent_writers_never_fail_and_never_mix(tmp_path):
    path = str(tmp_path / "shared.txt")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sorted(pool.map(_write_many, [(path, "a"), (path, "b")])) == ["a", "b"]
    lines = set(open(path).read().splitlines())
    assert len(lines) == 1 and lines.pop().split()[1] == "39"
    assert _leftovers(tmp_path) == []
