"""The local stack's state on disk: snapshots of the embedded AWS's backends in a data folder.

moto keeps every table, bucket (object versions and their ids included) and queue in global backend
objects of this process and has no persistence of its own, so the store pickles those objects whole:
nothing is translated, so nothing is lost — a release stays bound to the very S3 version id it was
validated with, a device keeps every attribute. The S3 event queue is kept too, so an upload whose
event was not handled yet is handled after a restart.

- The snapshot is one file, `state.pickle` in the data folder, replaced atomically (written to a temporary
  file, fsynced, `os.replace`d, the folder fsynced): a crash or `kill -9` leaves the previous snapshot or
  the new one, never a torn one, and a copy of the file taken at any time is a consistent backup.
- It is taken under the embedded AWS's lock (no request is half done), at most once a second and only
  when a request may have changed something (`embedded.WRITES`), and once more on a clean stop: a crash
  loses at most about the last second of writes.
- A header names the format, the moto version that wrote it and a SHA-256 of the payload, checked on
  load. A snapshot written by another moto version is still loaded (moto's objects rarely change),
  with a warning, and a copy of it is kept as `state.pickle.moto-<version>` before it is first
  replaced, to go back to that version with. A snapshot that cannot be read stops the stack with a
  clear message and is left untouched.
- `--fresh` starts empty; the snapshot that was there is kept as `state.pickle.before-fresh`.
- `lock` in the folder is held (flock) while a stack uses it: two stacks cannot share one folder. The
  kernel drops it when the process dies, however it dies.

Pickles run code when loaded: only use data folders you made yourself.
"""

from __future__ import annotations

import copyreg
import fcntl
import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import threading
import time
from pathlib import Path
from typing import IO, Any

import moto
import moto.backends
from moto.core.base_backend import BackendDict
from moto.s3.utils import _VersionedKeyStore

from otafleet_local import embedded

log = logging.getLogger("otafleet_local.persist")

SERVICES = ("s3", "dynamodb", "sqs")
SNAPSHOT = "state.pickle"
LOCK = "lock"
MAGIC = b"otafleet-local state\n"
FORMAT = 1
INTERVAL_SECONDS = 1.0
# Attributes of a BackendDict that say what it is, not what it holds: they stay as this process made them.
_IDENTITY = frozenset({"_id", "backend", "service_name", "_use_boto3_regions", "_additional_regions"})


class StoreError(RuntimeError):
    """The data folder cannot be used; the message says why and what to do."""


def _versioned_key_store(lists: list[tuple[str, list[Any]]]) -> _VersionedKeyStore:
    store = _VersionedKeyStore()
    for key, versions in lists:
        store.setlist(key, versions)
    return store


def _reduce_versioned(store: _VersionedKeyStore) -> tuple[Any, ...]:
    # Pickle's default for a dict subclass goes through .items(), which this class overrides to give only
    # the newest version of each key: every older version (and its version id) would be lost.
    return _versioned_key_store, ([(key, list(versions)) for key, versions in dict.items(store)],)


def _fresh(kind: type) -> Any:
    return kind()


def _reduce_sync(kind: type) -> Any:
    """Locks, conditions and events hold no state worth keeping between runs (nothing waits on them
    while the snapshot is taken, under the lock); they come back new and released."""
    return lambda obj: (_fresh, (kind,))


_DISPATCH: dict[type, Any] = {
    **copyreg.dispatch_table,
    _VersionedKeyStore: _reduce_versioned,
    type(threading.Lock()): _reduce_sync(threading.Lock),
    type(threading.RLock()): _reduce_sync(threading.RLock),
    threading.Condition: _reduce_sync(threading.Condition),
    threading.Event: _reduce_sync(threading.Event),
    threading.Semaphore: _reduce_sync(threading.Semaphore),
}


class _Pickler(pickle.Pickler):
    dispatch_table = _DISPATCH


def _capture() -> dict[str, Any]:
    """The persisted backends as one picklable object; call under embedded.AWS_LOCK."""
    services: dict[str, Any] = {}
    for name in SERVICES:
        backends = moto.backends.get_backend(name)  # type: ignore[call-overload]
        attrs = {k: v for k, v in vars(backends).items() if k not in _IDENTITY}
        services[name] = (dict(backends), attrs)
    return services


def _restore(services: dict[str, Any]) -> None:
    """Put captured backends in place of this process's (empty) ones; call under embedded.AWS_LOCK.
    The BackendDict objects stay (moto's modules hold references to them); their contents change."""
    for name, (accounts, attrs) in services.items():
        backends: BackendDict[Any] = moto.backends.get_backend(name)  # type: ignore[call-overload]
        backends.clear()
        backends.update(accounts)
        for key, value in attrs.items():
            setattr(backends, key, value)
        instances: list[Any] = BackendDict._instances  # type: ignore[misc]
        if accounts and backends not in instances:
            instances.append(backends)  # so that moto's reset (/moto-api/reset) sees them


def encode(services: dict[str, Any]) -> bytes:
    payload = io.BytesIO()
    _Pickler(payload, protocol=pickle.HIGHEST_PROTOCOL).dump(services)
    body = payload.getvalue()
    header = {"format": FORMAT, "moto": moto.__version__, "sha256": hashlib.sha256(body).hexdigest()}
    return MAGIC + json.dumps(header).encode() + b"\n" + body


def decode(data: bytes, where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, services) of a snapshot's bytes, or StoreError saying what is wrong with it."""
    if not data.startswith(MAGIC):
        raise StoreError(f"{where} is not a snapshot of otafleet-local")
    line, sep, body = data[len(MAGIC) :].partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not sep or not isinstance(header, dict):
        raise StoreError(f"{where} has no readable header")
    if header.get("format") != FORMAT:
        raise StoreError(f"{where} is in format {header.get('format')!r}; this otafleet-local reads {FORMAT}")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise StoreError(f"{where} is damaged (its checksum does not match)")
    try:
        services = pickle.loads(body)
    except Exception as error:
        raise StoreError(
            f"{where} (written by moto {header.get('moto')}, this is moto {moto.__version__}) cannot be "
            f"loaded: {type(error).__name__}: {error}"
        ) from None
    return header, services


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash at any point leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Store:
    """One data folder: `open()` (lock it, restore what is there), then `start()` the snapshot timer;
    `close()` takes the last snapshot and lets the folder go."""

    def __init__(self, folder: Path, *, fresh: bool = False, interval: float = INTERVAL_SECONDS) -> None:
        self.folder = folder
        self.fresh = fresh
        self.interval = interval
        self.restored = False  # whether open() found state to restore
        self.snapshots = 0
        self._lock_file: IO[bytes] | None = None
        self._saved_at = -1  # embedded.WRITES.count at the last snapshot
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # the timer's and close()'s snapshots never interleave
        self._backup_of: str | None = None  # moto version of a loaded snapshot to keep a copy of

    @property
    def path(self) -> Path:
        return self.folder / SNAPSHOT

    def open(self) -> bool:
        """Lock the folder and restore its snapshot into the (still empty) backends, unless fresh.
        True when state was restored. Call before anything is created on the embedded AWS."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.folder / LOCK, "ab")  # noqa: SIM115 - held until close()
        except OSError as error:
            raise StoreError(f"cannot use {self.folder} as the data folder: {error.strerror or error}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise StoreError(
                f"{self.folder} is in use by another otafleet-local; stop it or pass --data with another folder"
            ) from None
        self._lock_file = lock_file
        for stale in self.folder.glob(f".{SNAPSHOT}.*.tmp"):  # left by a crash mid-write
            stale.unlink(missing_ok=True)
        if self.fresh and self.path.exists():
            # Starting empty on purpose, but one slip of an option should not cost a fleet's data.
            os.replace(self.path, self.folder / f"{SNAPSHOT}.before-fresh")
        if self.fresh or not self.path.exists():
            self._saved_at = -1  # the first snapshot writes the file
            return False
        header, services = decode(self.path.read_bytes(), self.path)
        if header.get("moto") != moto.__version__:
            log.warning(
                "%s was written by moto %s; this is moto %s: loading it anyway (a copy stays as %s.moto-%s)",
                self.path,
                header.get("moto"),
                moto.__version__,
                SNAPSHOT,
                header.get("moto"),
            )
            self._backup_of = str(header.get("moto"))
        with embedded.AWS_LOCK:
            _restore(services)
            self._saved_at = embedded.WRITES.count
        self.restored = True
        return True

    def snapshot(self, *, force: bool = False) -> bool:
        """Write a snapshot if anything may have changed since the last one (or `force`); True if written."""
        with self._writing:
            with embedded.AWS_LOCK:
                count = embedded.WRITES.count
                if count == self._saved_at and not force:
                    return False
                data = encode(_capture())  # while no request runs: a consistent cut
            if self._backup_of is not None:
                backup = self.folder / f"{SNAPSHOT}.moto-{self._backup_of}"
                if not backup.exists():
                    shutil.copy2(self.path, backup)
                self._backup_of = None
            write_atomically(self.path, data)  # outside the lock: requests go on meanwhile
            self._saved_at = count
            self.snapshots += 1
            return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="otafleet-store", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            started = time.monotonic()
            try:
                if self.snapshot():
                    log.debug("snapshot written in %.0f ms", (time.monotonic() - started) * 1000)
            except Exception:  # keep the stack running; the next tick tries again
                log.exception("writing a snapshot to %s failed", self.path)

    def close(self) -> None:
        """Stop the timer, take the last snapshot (when anything changed), release the folder."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self._lock_file is None:
            return
        try:
            self.snapshot(force=self._saved_at < 0)
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None
