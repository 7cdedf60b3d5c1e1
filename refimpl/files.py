"""Reading and writing files: the one place where refimpl touches the disk.

Every file refimpl writes goes through ``atomic_write`` (directly or through
``write_text``, ``write_json`` and ``save_npz``); every ``.npz`` it reads goes
through ``read_npz`` and every JSON file through ``read_json``.

Writing
    The bytes go to a new temporary file with a unique name in the target's
    folder, are flushed and ``fsync``-ed, and the temporary file is renamed
    over the target with ``os.replace`` (atomic on POSIX and Windows). A
    reader therefore sees either the old file or the complete new one, never
    a part. On any failure, including ``KeyboardInterrupt``, the temporary
    file is removed. Concurrent writers of one path each finish; the last
    rename wins and no write fails because another one ran.

Reading ``.npz``
    The file is opened as a zip archive and every member is checked before
    any array is allocated: it must be a ``.npy`` array (nothing else is
    accepted), appear once, hold no Python objects (nothing is ever
    unpickled), have a dtype of an allowed kind, and the size its header
    claims must match the bytes actually stored. A file claiming 10^12
    elements is refused in microseconds instead of exhausting memory.

Reading JSON
    The size is bounded before reading and the nesting depth of the parsed
    record is bounded (the parser's own recursion limit is caught), so no
    file exhausts memory or the stack, and callers may walk the record
    recursively.

All problems with a file's content raise ``FileFormatError`` (a
``ValueError``) whose message names the file and, where there is one, the
field. A missing or unreadable file raises the usual ``OSError``.
"""

import errno
import json
import math
import os
import secrets
import zipfile

import numpy as np

# Deflate cannot expand data by more than a factor of about 1032 (RFC 1951:
# a 258-byte match costs at least 2 bits); a member claiming more is a lie.
_DEFLATE_MAX_RATIO = 1032
# A .npy header is at most a few hundred bytes for the arrays refimpl writes;
# NumPy's own default limit.
_NPY_MAX_HEADER = 10_000
# Bounds for read_json; both are parameters.
JSON_MAX_BYTES = 512 * 2**20
JSON_MAX_DEPTH = 64
# dtype kinds accepted by default: bool, signed/unsigned integers, floats,
# unicode strings. Never "O" (Python objects, i.e. pickles).
NUMERIC_KINDS = "biuf"
DEFAULT_KINDS = "biufU"


class FileFormatError(ValueError):
    """A file whose content is not what it should be; the message names file and field."""


def as_path(path, name="path"):
    """``path`` as a ``str`` (from ``str``, ``bytes`` or ``os.PathLike``); TypeError naming it."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got "
                        f"{type(path).__name__}") from None
    return os.fsdecode(path)


# --------------------------------------------------------------------------- writing


def atomic_write(path, fill):
    """Write a file atomically: ``fill(handle)`` writes the content to a binary handle.

    The parent folder is created if needed. Returns ``path``.
    """
    path = as_path(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder; give a file name", path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp, fd = _create_unique(folder, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
    return path


def _create_unique(folder, base):
    """Create and open a new file ``.<base>.<random>.tmp`` in ``folder`` (never an existing one)."""
    while True:
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            # O_EXCL: fails rather than sharing a name with another writer;
            # mode 0o666 lets the umask decide, as for any new file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        return tmp, fd


def _fsync_folder(folder):
    """Make the rename itself durable where the OS allows it (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path, text):
    """Write ``text`` to ``path`` atomically, UTF-8 encoded."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, record):
    """Write ``record`` as indented JSON with sorted keys (no NaN/inf) atomically."""
    return write_text(path, json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_npz(path, arrays):
    """``np.savez`` of the dict ``arrays`` to ``path`` atomically."""
    for name, value in arrays.items():
        if np.asarray(value).dtype.hasobject:
            raise TypeError(f"{path}: field {name!r} holds Python objects; only plain arrays "
                            "are written")
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


# --------------------------------------------------------------------------- reading .npz


class NpzContents(dict):
    """The arrays of an ``.npz`` by name, with typed accessors whose errors name file and field."""

    def __init__(self, path, arrays):
        super().__init__(arrays)
        self.path = path

    def _get(self, name):
        if name not in self:
            raise FileFormatError(f"{self.path} lacks the field {name!r}")
        return self[name]

    def _error(self, name, problem):
        return FileFormatError(f"{self.path}: field {name!r} {problem}")

    def string(self, name):
        """A 0-d string field as ``str``."""
        value = self._get(name)
        if value.shape != () or value.dtype.kind != "U":
            raise self._error(name, f"must be a single string, got dtype {value.dtype} and "
                              f"shape {value.shape}")
        return str(value)

    def integer(self, name, minimum=None, maximum=None):
        """A 0-d integer field as ``int`` (a float such as 4.7 is refused, not truncated)."""
        value = self._get(name)
        if value.shape != () or value.dtype.kind not in "iu":
            raise self._error(name, f"must be a single integer, got dtype {value.dtype} and "
                              f"shape {value.shape}")
        v = int(value)
        if minimum is not None and v < minimum or maximum is not None and v > maximum:
            raise self._error(name, f"is {v}; allowed range is [{minimum}, {maximum}]")
        return v

    def integers(self, name, minimum=None, shape=None):
        """A 1-d integer field as an int64 array, optionally with a lower bound and a shape."""
        value = self._get(name)
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise self._error(name, f"must be a list of integers, got dtype {value.dtype} and "
                              f"shape {value.shape}")
        if shape is not None and value.shape != tuple(shape):
            raise self._error(name, f"has shape {value.shape}, expected {tuple(shape)}")
        if minimum is not None and np.any(value < minimum):
            raise self._error(name, f"holds {value.tolist()}; each must be at least {minimum}")
        return value.astype(np.int64)

    def real(self, name, positive=False):
        """A 0-d finite real field as ``float``."""
        value = self._get(name)
        if value.shape != () or value.dtype.kind not in "iuf":
            raise self._error(name, f"must be a single number, got dtype {value.dtype} and "
                              f"shape {value.shape}")
        v = float(value)
        if not math.isfinite(v) or (positive and v <= 0):
            raise self._error(name, f"is {v}; it must be {'positive and ' * positive}finite")
        return v

    def floats(self, name, ndim=None, shape=None):
        """A real field as a writable float64 array, optionally of given rank or shape."""
        value = self._get(name)
        if value.dtype.kind not in "iuf":
            raise self._error(name, f"must hold numbers, got dtype {value.dtype}")
        if ndim is not None and value.ndim != ndim:
            raise self._error(name, f"must have {ndim} dimension(s), got shape {value.shape}")
        if shape is not None and value.shape != tuple(shape):
            raise self._error(name, f"has shape {value.shape}, expected {tuple(shape)}")
        return np.array(value, dtype=np.float64)


def read_npz(path, what="file", fields=None, required=(), kinds=DEFAULT_KINDS,
             file_format=None, finite=True, max_bytes=None):
    """Read an ``.npz`` safely; returns an ``NpzContents`` (a dict of arrays).

    Parameters
    ----------
    path : str or path-like
    what : str; how errors describe the file (e.g. ``"model file"``)
    fields : dict name -> dtype kinds (e.g. ``{"params": "f", "kind": "U"}``), optional;
        when given, a member not listed is refused, and each listed member's
        dtype kind must be one of its letters
    required : names that must be present
    kinds : dtype kinds allowed for members not described by ``fields``
        (default: bool, integers, floats, strings; objects never)
    file_format : ``(name, version)``, optional; the ``format`` and ``version``
        fields must hold exactly these
    finite : bool; refuse NaN and infinities in float members
    max_bytes : int, optional; bound on the total uncompressed size

    Raises ``FileFormatError`` (a ``ValueError``) naming the file and member
    for anything but a well-formed file, and ``OSError`` if it cannot be read.
    """
    path = as_path(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{what} {path} is a folder, not a file", path)
    size = os.path.getsize(path)  # OSError (e.g. FileNotFoundError) for a missing file
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OverflowError):
        raise FileFormatError(f"{path} is not a {what} (.npz): not a zip archive, or a "
                              "truncated or corrupted one") from None
    with archive:
        infos = archive.infolist()
        _check_members(path, what, infos, size, max_bytes)
        arrays = {}
        for info in infos:
            name = info.filename[:-len(".npy")]
            allowed = kinds if fields is None else fields.get(name)
            if allowed is None:
                raise FileFormatError(f"{path}: unexpected field {name!r} in a {what} "
                                      f"(known fields: {', '.join(sorted(fields))})")
            arrays[name] = _read_member(path, archive, info, name, allowed)
    contents = NpzContents(path, arrays)
    if file_format is not None:
        _check_format(contents, what, *file_format)
    missing = [name for name in required if name not in contents]
    if missing:
        raise FileFormatError(f"{path} lacks the field(s) {', '.join(map(repr, missing))} of a "
                              f"{what}")
    if finite:
        for name, value in contents.items():
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise FileFormatError(f"{path}: field {name!r} contains NaN or infinite values")
    return contents


def _check_members(path, what, infos, size, max_bytes):
    """Refuse non-.npy members, duplicates and sizes the archive cannot hold."""
    seen, total = set(), 0
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise FileFormatError(f"{path}: member {name!r} is not a .npy array; a {what} "
                                  "holds only .npy arrays")
        if name in seen:
            raise FileFormatError(f"{path}: member {name!r} appears twice")
        seen.add(name)
        if info.compress_type == zipfile.ZIP_STORED:
            limit = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            limit = _DEFLATE_MAX_RATIO * info.compress_size + 1024
        else:
            raise FileFormatError(f"{path}: member {name!r} uses zip compression method "
                                  f"{info.compress_type}; only stored or deflated members "
                                  "are read")
        if info.compress_size > size or info.file_size > limit:
            raise FileFormatError(f"{path}: member {name!r} claims {info.file_size} bytes, "
                                  f"more than the {size}-byte file can hold (corrupted)")
        total += info.file_size
    if max_bytes is not None and total > max_bytes:
        raise FileFormatError(f"{path}: the arrays take {total} bytes, more than the "
                              f"{max_bytes} allowed for a {what}")


def _read_member(path, archive, info, name, allowed):
    where = f"{path}: field {name!r}"
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                    member, max_header_size=_NPY_MAX_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                    member, max_header_size=_NPY_MAX_HEADER)
            else:
                raise FileFormatError(f"{where}: unsupported .npy version {version}")
            if dtype.hasobject:
                raise FileFormatError(f"{where} holds Python objects (a pickle); refimpl "
                                      "never loads pickles: save plain numeric arrays")
            if dtype.kind not in allowed:
                raise FileFormatError(f"{where} has dtype {dtype}; expected "
                                      f"{_describe_kinds(allowed)}")
            header = member.tell()
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes != info.file_size - header:
                raise FileFormatError(f"{where}: its header claims {math.prod(shape)} "
                                      f"elements ({nbytes} bytes) but the file stores "
                                      f"{info.file_size - header} bytes (corrupted)")
            buffer = bytearray(nbytes)
            view, got = memoryview(buffer), 0
            while got < nbytes:
                n = member.readinto(view[got:])
                if not n:
                    break
                got += n
            if got != nbytes or member.read(1):
                raise FileFormatError(f"{where}: truncated data (corrupted file)")
    except FileFormatError:
        raise
    except Exception as exc:  # BadZipFile (CRC), zlib.error, EOFError, header syntax errors
        raise FileFormatError(f"{where} is unreadable (corrupted file: "
                              f"{type(exc).__name__})") from None
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def _describe_kinds(kinds):
    names = {"b": "booleans", "i": "integers", "u": "unsigned integers", "f": "floats",
             "U": "a string"}
    return " or ".join(names.get(k, k) for k in kinds)


def _check_format(contents, what, name, version):
    path = contents.path
    fmt = str(contents["format"]) if "format" in contents else None
    if fmt != name:
        raise FileFormatError(f"{path} is not a {what} (its format field is {fmt!r}, "
                              f"expected {name!r})")
    have = contents.integer("version")
    if have != version:
        raise FileFormatError(f"{path} has format version {have}; this refimpl reads version "
                              f"{version}")


# --------------------------------------------------------------------------- reading JSON

def read_json(path, what="file", max_bytes=JSON_MAX_BYTES, max_depth=JSON_MAX_DEPTH):
    """Parse a UTF-8 JSON file whose size and nesting depth are bounded.

    Raises ``FileFormatError`` naming the file (and the line and column of a
    syntax error), ``OSError`` if the file cannot be read.
    """
    path = as_path(path, what)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{what} {path} is a folder, not a file", path)
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise FileFormatError(f"{what} {path} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{what} {path} is not valid JSON: {exc.msg} (line {exc.lineno}, "
                              f"column {exc.colno})") from None
    except RecursionError:  # the C parser stops at the interpreter's recursion limit
        raise FileFormatError(f"{what} {path} is nested too deeply; at most {max_depth} "
                              "levels are read") from None
    depth = _json_depth(record)
    if depth > max_depth:
        raise FileFormatError(f"{what} {path} is nested {depth} levels deep; at most "
                              f"{max_depth} are read")
    return record


def _json_depth(record):
    """Nesting depth of lists and dicts, without recursion (a scalar has depth 0)."""
    deepest, stack = 0, [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((item, depth + 1) for item in value)
    return deepest
