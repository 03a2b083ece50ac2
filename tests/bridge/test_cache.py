"""The stage cache: keys, verified entries, concurrent writers, the size bound, the folder's owner,
and the files a stage reads (recorded in a real stage child)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from bridge.base.errors import ConversionError, StageCrashed, UsageError
from bridge.base.files import sha256
from bridge.cache import Digests, KnownFiles, StageCache, code_digest, rebase, tree_digest
from bridge.stages import Outcome, Stage, call_stage

MAKE = Stage("make", "tests.bridge.stage_functions:make_files")
READ = Stage("read", "tests.bridge.stage_functions:read_files", records_reads=True)


def _made(root: Path) -> Outcome:
    outcome = call_stage(MAKE, str(root))
    assert outcome.error is None
    return outcome


def _cache(tmp_path: Path, **kw) -> StageCache:
    return StageCache(tmp_path / "cache", **kw)


def test_a_stored_result_comes_back_with_its_files_under_the_new_folder(tmp_path):
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {"option": 1})
    cache.put(key, _made(tmp_path / "run1"), tmp_path / "run1")
    back = cache.get(key, tmp_path / "run2")
    assert back.result == {"model": str(tmp_path / "run2" / "model.onnx"), "samples": str(tmp_path / "run2" / "data"),
                           "name": "model"}
    run2 = tmp_path / "run2"
    assert (run2 / "model.onnx").read_bytes() == b"graph"
    assert (run2 / "model.onnx.data").read_bytes() == b"tensors"  # a named file's external data comes along
    assert (run2 / "data" / "000000_0000.npy").read_bytes() == b"sample"
    assert not (run2 / "unlisted.tmp").exists()  # what the result does not name is not kept
    assert cache.get(cache.key(MAKE, {"option": 2}), tmp_path / "run3") is None


def test_a_restore_tells_the_digests_of_the_bytes_it_copied(tmp_path):
    """The orchestrator records a restored artifact's sha256 without reading it again: the value
    must be the sha256 of the bytes now on disk, as hashed while they were copied."""
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    cache.put(key, _made(tmp_path / "run1"), tmp_path / "run1")
    digests = Digests()
    cache.get(key, tmp_path / "run2", digests)
    for name in ("model.onnx", "model.onnx.data", "data/000000_0000.npy"):
        assert digests.known(tmp_path / "run2" / name) == sha256(tmp_path / "run2" / name)
    assert digests.known(tmp_path / "run1" / "model.onnx") == sha256(tmp_path / "run1" / "model.onnx")  # a link
    (tmp_path / "copy.onnx").write_bytes((tmp_path / "run1" / "model.onnx").read_bytes())
    assert digests.known(tmp_path / "copy.onnx") is None  # never hashed, never guessed


def test_a_restore_links_the_entry_and_an_edit_through_the_link_voids_it(tmp_path):
    """Restored files are hard links (no bytes copied: most of a warm run was copying); an artifact
    edited in place after it was published edits the entry too, which must then fail its manifest
    and never be used again."""
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    cache.put(key, _made(tmp_path / "run1"), tmp_path / "run1")
    entry = next((tmp_path / "cache" / "entries").glob(f"*/{key}"))
    cache.get(key, tmp_path / "run2")
    restored = tmp_path / "run2" / "model.onnx"
    assert restored.stat().st_ino == (entry / "files" / "model.onnx").stat().st_ino
    with open(restored, "r+b") as f:  # in place, as an editor or a metadata writer would
        f.write(b"G")
    assert cache.get(key, tmp_path / "run3") is None
    assert not entry.exists()
    assert not (tmp_path / "run3" / "model.onnx").exists()


def test_a_store_links_the_stage_files_tells_their_digests_and_an_edit_voids_it(tmp_path):
    """A cold run stores its files by hard link too (ResNet50's hub and two .tflite files were
    250 MB copied on the way): the digests learn each stored file's sha256 (the hub's is needed
    next), and a work file edited in place afterwards voids the entry."""
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    digests = Digests()
    cache.put(key, _made(tmp_path / "run1"), tmp_path / "run1", digests)
    entry = next((tmp_path / "cache" / "entries").glob(f"*/{key}"))
    stored = tmp_path / "run1" / "model.onnx"
    assert stored.stat().st_ino == (entry / "files" / "model.onnx").stat().st_ino
    for name in ("model.onnx", "model.onnx.data", "data/000000_0000.npy"):
        assert digests.known(tmp_path / "run1" / name) == sha256(tmp_path / "run1" / name)
    with open(stored, "r+b") as f:
        f.write(b"G")
    assert cache.get(key, tmp_path / "run2") is None
    assert not entry.exists()


def _age(folder: Path, seconds: float) -> None:
    """Every file under `folder` last written `seconds` ago (a stage that wrote them that long before
    its result was stored)."""
    then = time.time_ns() - int(seconds * 1e9)
    for f in folder.rglob("*"):
        if f.is_file():
            os.utime(f, ns=(then, then))


def _edit_keeping_times(path: Path) -> None:
    """Change a byte in place, then put its modification time back: what a write in the same tick of
    the filesystem's clock as the one before it leaves."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(b"G")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_settled_entry_file_is_trusted_by_its_times_and_an_edit_moving_them_voids_it(tmp_path):
    """A file stored well after it was last written is known unchanged by its inode, size and
    modification time, as git and bazel know one: its bytes are not read again (a warm run of four
    trained models hashed 0.7 GB to find them unchanged). Any write moves its time and voids it."""
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    made = _made(tmp_path / "run1")
    _age(tmp_path / "run1", 5)
    cache.put(key, made, tmp_path / "run1")
    entry = next((tmp_path / "cache" / "entries").glob(f"*/{key}"))
    stored = {f["path"]: f["stat"] for f in json.loads((entry / "manifest.json").read_text())["files"]}
    assert all(st is not None for st in stored.values()), stored
    _edit_keeping_times(entry / "files" / "model.onnx")
    back = cache.get(key, tmp_path / "run2")  # trusted by its times: not read, so the edit is not seen
    assert back is not None and (tmp_path / "run2" / "model.onnx").read_bytes() == b"Graph"
    with open(tmp_path / "run2" / "model.onnx", "r+b") as f:  # an ordinary write, through the run's link
        f.write(b"X")
    assert cache.get(key, tmp_path / "run3") is None
    assert not entry.exists()


def test_a_file_stored_as_soon_as_it_was_written_is_hashed_until_its_times_settle(tmp_path):
    """A file stored within a tick or two of its last write could be written again without its time
    moving: it is hashed on every restore until it is older, then its times are learned
    (`verified.json`) and trusted from the next restore on."""
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    cache.put(key, _made(tmp_path / "run1"), tmp_path / "run1")  # just written
    entry = next((tmp_path / "cache" / "entries").glob(f"*/{key}"))
    stored = {f["path"]: f["stat"] for f in json.loads((entry / "manifest.json").read_text())["files"]}
    assert stored["model.onnx"] is None, stored
    _edit_keeping_times(entry / "files" / "model.onnx")
    assert cache.get(key, tmp_path / "run2") is None  # the same time, other bytes: found by hashing
    assert not entry.exists()

    cache.put(key, _made(tmp_path / "run3"), tmp_path / "run3")
    entry = next((tmp_path / "cache" / "entries").glob(f"*/{key}"))
    assert cache.get(key, tmp_path / "run4") is not None and not (entry / "verified.json").exists()
    _age(entry / "files", 5)  # its times settle (set in the past: the same as waiting)
    assert cache.get(key, tmp_path / "run5") is not None  # hashed, matched: its times are learned
    learned = json.loads((entry / "verified.json").read_text())
    assert set(learned) == set(stored), learned
    _edit_keeping_times(entry / "files" / "model.onnx")
    assert cache.get(key, tmp_path / "run6") is not None  # trusted now: not read


def test_a_users_file_is_read_again_only_when_its_identity_moved(tmp_path):
    """A source or calibration file's sha256 is kept with its inode, size and modification and
    change times: while they hold it is not read (a forged record is believed, so reading it would
    show), and a write that puts the modification time back still moves the change time."""
    known = KnownFiles(tmp_path / "files")
    big = tmp_path / "weights.pt"
    big.write_bytes(os.urandom(KnownFiles.FROM))
    assert known.sha256(str(big)) == sha256(big)
    assert not list((tmp_path / "files").glob("*/*.json"))  # just written: not settled, not recorded
    time.sleep(0.05)
    assert known.sha256(str(big)) == sha256(big)
    record = next((tmp_path / "files").glob("*/*.json"))
    kept = json.loads(record.read_text())
    record.write_text(json.dumps({**kept, "sha256": "f" * 64}))
    assert known.sha256(str(big)) == "f" * 64  # believed: the bytes were not read
    _edit_keeping_times(big)  # as `cp -p` over it: other bytes, the same size and mtime
    assert big.stat().st_mtime_ns == kept["identity"][3]
    assert known.sha256(str(big)) == sha256(big) != kept["sha256"]
    small = tmp_path / "small.npy"
    small.write_bytes(b"x" * 100)
    time.sleep(0.05)
    assert known.sha256(str(small)) == sha256(small)
    assert len(list((tmp_path / "files").glob("*/*.json"))) == 1  # small files are simply hashed


def test_a_link_to_a_known_file_is_known(tmp_path):
    """The ONNX lane ships the hub as a hard link: its sha256 is the hub's, not read again."""
    hub = tmp_path / "hub.onnx"
    hub.write_bytes(b"graph")
    digests = Digests()
    digests.learn(hub, "a" * 64)
    os.link(hub, tmp_path / "shipped.onnx")
    assert digests.known(tmp_path / "shipped.onnx") == "a" * 64
    (tmp_path / "other.onnx").write_bytes(b"graph")  # the same bytes in another file: not known so
    assert digests.known(tmp_path / "other.onnx") is None


def test_keys_follow_stage_and_options_not_their_order(tmp_path):
    cache = _cache(tmp_path)
    assert cache.key(MAKE, {"a": 1, "b": [1.5, "x"]}) == cache.key(MAKE, {"b": [1.5, "x"], "a": 1})
    assert cache.key(MAKE, {"a": 1}) != cache.key(MAKE, {"a": 2})
    assert cache.key(MAKE, {"a": 1}) != cache.key(Stage("make", "other:function"), {"a": 1})
    assert cache.key(MAKE, {"a": 1}) != cache.key(Stage("make", MAKE.function, ("torch",)), {"a": 1})


@pytest.mark.parametrize("damage", ["file", "result", "manifest", "truncate"])
def test_a_damaged_entry_is_never_used_and_is_deleted(tmp_path, damage):
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    cache.put(key, _made(tmp_path / "run1"), tmp_path / "run1")
    entry = next((tmp_path / "cache" / "entries").glob(f"*/{key}"))
    if damage == "file":
        (entry / "files" / "model.onnx").write_bytes(b"grapH")
    elif damage == "truncate":
        (entry / "files" / "data" / "000000_0000.npy").write_bytes(b"")
    elif damage == "result":
        blob = bytearray((entry / "result.pickle").read_bytes())
        blob[-3] ^= 1
        (entry / "result.pickle").write_bytes(bytes(blob))
    else:
        (entry / "manifest.json").write_text("{not json")
    assert cache.get(key, tmp_path / "run2") is None
    assert not entry.exists() or damage == "manifest"  # an unreadable manifest is simply no entry
    assert not (tmp_path / "run2" / "model.onnx").exists()  # nothing half-copied is left to be used


def test_crashes_and_foreign_errors_are_not_cached_deliberate_errors_are(tmp_path):
    cache = _cache(tmp_path)
    crashed = Outcome(error=StageCrashed("stage x crashed", stage="x"), deliberate=False)
    cache.put("a" * 64, crashed, tmp_path)
    assert cache.get("a" * 64, tmp_path / "r1") is None
    refused = Outcome(error=ConversionError("2 op type(s) the coreml lane refuses", stage="coreml-preflight"))
    cache.put("b" * 64, refused, tmp_path)
    back = cache.get("b" * 64, tmp_path / "r2")
    with pytest.raises(ConversionError, match="refuses") as e:
        back.unwrap()
    assert e.value.stage == "coreml-preflight"


def test_concurrent_writers_of_one_key_leave_one_whole_entry(tmp_path):
    cache = _cache(tmp_path)
    key = cache.key(MAKE, {})
    runs = [(tmp_path / f"w{i}", _made(tmp_path / f"w{i}")) for i in range(6)]
    threads = [threading.Thread(target=cache.put, args=(key, o, root)) for root, o in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list((tmp_path / "cache" / "entries").glob(f"*/{key}"))) == 1
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # the losers cleaned up
    assert cache.get(key, tmp_path / "back").result["name"] == "model"


def test_the_size_bound_drops_the_least_recently_used(tmp_path):
    cache = _cache(tmp_path, max_bytes=1 << 20)
    big = tmp_path / "big"
    keys = []
    for i in range(3):
        root = tmp_path / f"r{i}"
        root.mkdir()
        (root / "blob.bin").write_bytes(os.urandom(400 << 10))
        key = cache.key(MAKE, {"i": i})
        cache.put(key, Outcome(result=str(root / "blob.bin")), root)
        keys.append(key)
        if i == 1:  # two fit; the first is used again, so the second is now the least recent
            assert cache.get(keys[0], big / "touch") is not None
    entries = (tmp_path / "cache" / "entries")
    assert {p.name for p in entries.glob("*/*")} == {keys[0], keys[2]}
    total = sum(json.loads(m.read_text())["bytes"] for m in entries.glob("*/*/manifest.json"))
    assert total <= 1 << 20


def test_a_process_trims_on_its_first_store_then_once_per_slice_of_the_bound(tmp_path):
    """Trimming reads every manifest: a process trims when it first stores, then after storing
    TRIM_EVERY of the bound, so the cache passes its bound by less than that slice meanwhile."""
    from bridge.cache import TRIM_EVERY

    bound = 1 << 20
    cache = _cache(tmp_path, max_bytes=bound)
    entries = tmp_path / "cache" / "entries"

    def store(i: int, size: int) -> str:
        root = tmp_path / f"r{i}"
        root.mkdir()
        (root / "blob.bin").write_bytes(os.urandom(size))
        key = cache.key(MAKE, {"i": i})
        cache.put(key, Outcome(result=str(root / "blob.bin")), root)
        return key

    def stored() -> int:
        return sum(json.loads(m.read_text())["bytes"] for m in entries.glob("*/*/manifest.json"))

    first = store(0, bound - (20 << 10))
    second = store(1, 30 << 10)  # past the bound, within the slice since the first store's trim: kept
    assert 30 << 10 < bound * TRIM_EVERY < 60 << 10
    assert {p.name for p in entries.glob("*/*")} == {first, second} and stored() > bound
    third = store(2, 30 << 10)  # the slice is used up: this store trims, the least recently used goes
    assert {p.name for p in entries.glob("*/*")} == {second, third} and stored() <= bound * 0.8


def test_the_folder_must_be_yours_and_closed_to_others(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(UsageError, match="writable by nobody else"):
        StageCache(folder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        StageCache(tmp_path / "file")
    assert oct(os.stat(StageCache(tmp_path / "new" / "cache").root).st_mode & 0o777) == "0o700"


def test_rebase_moves_paths_in_dataclasses_and_containers(tmp_path):
    from bridge.base.arrays import Feeds

    value = {"feeds": Feeds("/w/old/data/feeds", ("x",), 2), "list": ["/w/old/a", "/w/older/b", 3],
             "tuple": ("/w/old",)}
    moved = rebase(value, "/w/old", "/w/new")
    assert moved == {"feeds": Feeds("/w/new/data/feeds", ("x",), 2), "list": ["/w/new/a", "/w/older/b", 3],
                     "tuple": ("/w/new",)}


def test_digests_never_follow_links_nor_open_special_files(tmp_path):
    secret = tmp_path / "secret"
    os.mkfifo(secret)  # opening it would block: the test hangs if a digest reads through a link
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.npy").write_bytes(b"a")
    (data / "link.npy").symlink_to(secret)
    os.mkfifo(data / "pipe")
    first = Digests().of(data)
    (data / "a.npy").write_bytes(b"b")
    assert Digests().of(data) != first


def test_a_stage_records_what_it_read_not_what_it_wrote(tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w1")
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "helper_module.py").write_text("VALUE = 1\n")
    made = tmp_path / "made.txt"
    outcome = call_stage(READ, [str(weights)], str(made), str(modules))
    assert outcome.result == "done"
    reads = dict(outcome.reads)
    from bridge.reads import read_digest

    assert reads[str(weights)] == read_digest(str(weights))
    assert str(modules / "helper_module.py") in reads  # an imported module, by its source
    assert str(made) not in reads  # written by the stage: an output
    import bridge

    own = str(Path(bridge.__file__).parent)
    assert not any("site-packages" in p or p.startswith(own) for p in reads)  # installed code: by version


def test_run_stage_still_raises_and_call_stage_returns(tmp_path):
    from bridge.stages import run_stage

    bad = Stage("bad", "tests.bridge.stage_functions:read_files")
    with pytest.raises(ConversionError, match="FileNotFoundError"):
        run_stage(bad, [str(tmp_path / "missing")], str(tmp_path / "w"))
    outcome = call_stage(bad, [str(tmp_path / "missing")], str(tmp_path / "w"))
    assert isinstance(outcome.error, ConversionError) and not outcome.cacheable  # not bridge's own error


def test_a_read_through_a_symlink_is_keyed_by_its_bytes_and_the_file_behind_it(tmp_path):
    from bridge.reads import ABSENT, read_digest

    (tmp_path / "v1.pt").write_bytes(b"weights")
    (tmp_path / "v2.pt").write_bytes(b"weights")
    link = tmp_path / "current.pt"
    link.symlink_to(tmp_path / "v1.pt")
    first = read_digest(str(link))
    assert first == read_digest(str(link)) == read_digest(str(tmp_path / "v1.pt"))
    link.unlink()
    link.symlink_to(tmp_path / "v2.pt")  # repointed: another file, even with the same bytes
    assert read_digest(str(link)) != first
    (tmp_path / "v2.pt").write_bytes(b"other")
    assert read_digest(str(link)).split(":")[0] != first.split(":")[0]
    assert read_digest(str(tmp_path / "gone.pt")) == ABSENT


def test_the_code_digest_follows_every_byte_and_path_of_the_tree_not_its_byte_code(tmp_path):
    """bridge's own code is keyed by content (an editable install keeps its version string while
    the code changes): a byte edited, a file added or renamed each change the digest; a compiled
    cache written beside the sources does not."""
    tree = tmp_path / "pkg"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.py").write_text("x = 1\n")
    (tree / "sub" / "b.py").write_text("y = 2\n")
    (tree / "sub" / "schema.json").write_text("{}")
    first = tree_digest([("bridge", str(tree))])
    (tree / "__pycache__").mkdir()
    (tree / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"\x00" * 16)
    (tree / "sub" / "c.pyc").write_bytes(b"\x01")
    assert tree_digest([("bridge", str(tree))]) == first
    (tree / "sub" / "b.py").write_text("y = 3\n")
    edited = tree_digest([("bridge", str(tree))])
    assert edited != first
    (tree / "sub" / "b.py").rename(tree / "sub" / "b2.py")
    renamed = tree_digest([("bridge", str(tree))])
    assert renamed not in (first, edited)
    (tree / "new.py").write_text("")
    assert tree_digest([("bridge", str(tree))]) not in (first, edited, renamed)
    assert tree_digest([("other", str(tree))]) != tree_digest([("bridge", str(tree))])
    assert len(code_digest()) == 64


def test_backend_versions_are_what_importlib_metadata_reads():
    """Versions come from the metadata folders' names (fast); they must equal each package's
    METADATA, for every backend the environment lists, installed or not."""
    from importlib import metadata

    from bridge.environment import PACKAGES, versions

    found = versions()
    assert set(found) == set(PACKAGES)
    for name in PACKAGES:
        try:
            expected = metadata.version(name)
        except metadata.PackageNotFoundError:
            expected = None
        assert found[name] == expected, name
    assert found["numpy"] is not None and found["bridge-convert"] is not None
