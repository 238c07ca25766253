"""Nothing half-written or corrupt is ever used: atomic writes, and manifests of sizes and
content hashes checked on read.

Every file is written beside and renamed into place (`write_bytes`), so a reader never
sees half a file. A manifest (`manifest.json`) records, for files under the folder it sits
in, each file's size and xxh3-128 hash. It is written after the data and before the step that makes the
data count (a stage's `summary.json`, a checkpoint's `done`, a file's rename into place),
so a manifest never vouches for data that is not there yet, and data that counts always
has its manifest. Two forms:

- a folder's manifest: a finished stage folder (`stages.base.finish`), a checkpoint
  (`checkpoint.save_state`), an `undo noise` or `undo export` folder; checked by
  `artifacts.is_done` and `artifacts.model_folder` (`check_stage`, `check_model`) and by
  `checkpoint.resumable`;
- one file's sidecar `.NAME.manifest` (hidden, so no reader's glob for the data, e.g.
  `chunk-*` or `runs/*.json`, meets it), naming that file only: a teacher-cache chunk,
  an attack run file, a search replay (which independent runs write one by one into a
  shared folder), search.json, the sweep's table, a run's summary.json; and the
  search's SQLite, written whenever the search is at rest (`check_file`).

What is checked when, and what a mismatch does: docs/integrity.md. In short: every byte
of every file at every reuse (xxh3 hashes a page-cached file at 9-22 GiB/s here, far
faster than loading it: experiments/integrity.py); derived files (chunks, run files,
replays, tables) are rebuilt; stage outputs, checkpoints, the search's SQLite and noised
or exported folders stop the run (`IntegrityError`).

Every manifest write and every check adds its seconds to a per-process count
(`take_spent`); each stage records its share in meta.json (`integrity_seconds`), which
experiments/integrity_overhead.py sums over a run folder. `UNDO_INTEGRITY=off` turns the
implicit writes and checks off, for that benchmark only (`undo verify` always checks).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from .configlib import ConfigError

MANIFEST = "manifest.json"
SIDECAR = ".manifest"  # `.chunk-0-00001.safetensors.manifest` beside its chunk
SCHEMA = "undo.manifest/1"
# Non-cryptographic (this guards against damage, not an adversary) and 15-20x faster
# than blake2b here (experiments/results/integrity.json); xxhash comes with `datasets`.
ALGO = "xxh3_128"
_BLOCK = 8 << 20
# Stage-folder prefixes -> the `--force` kind that re-runs them (docs/integrity.md).
_KINDS = {"pretrain": "pretrain", "import": "pretrain", "unlearn": "unlearn",
          "sweep": "unlearn", "distill": "distill (or oracle)"}
# For experiments/integrity_overhead.py only: `off` writes no manifest and checks nothing
# implicitly, to time a run without integrity work. Never for real runs: damage then
# goes unnoticed, and folders written so are later used unverified (docs/integrity.md).
SWITCH = "UNDO_INTEGRITY"


def enabled() -> bool:
    """Whether manifests are written and checked (always, unless UNDO_INTEGRITY=off)."""
    return os.environ.get(SWITCH, "on") != "off"


_spent = [0.0]  # seconds this process spent writing manifests and checking files


@contextmanager
def _timed() -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _spent[0] += time.perf_counter() - t0


def take_spent() -> float:
    """Seconds this process spent on integrity work (manifests and checks) since the last
    call; a stage's share, recorded in its meta.json."""
    s, _spent[0] = _spent[0], 0.0
    return s


def write_bytes(path: str | Path, data: bytes,
                before_rename: Callable[[], object] | None = None) -> Path:
    """Write via a temp file and rename, so a reader never sees half a file.

    `before_rename` runs once the data is in the temp file (`write_file` writes the
    file's manifest there). A failed write (disk full, an interrupt) removes its temp
    file: the folder is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class IntegrityError(ConfigError):
    """A file that would be used does not match its manifest (a user-facing stop)."""


@dataclass
class Verdict:
    """What one manifest's check found: file names relative to its folder."""

    manifest: Path
    intact: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)  # name -> what is wrong
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.missing

    def problems(self) -> list[str]:
        return ([f"{n}: {why}" for n, why in self.damaged.items()]
                + [f"{n}: missing" for n in self.missing])


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


def hash_file(path: Path) -> str:
    h = xxhash.xxh3_128()
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def is_manifest(path: Path) -> bool:
    return path.name == MANIFEST or _sidecar_target(path.name) is not None


def _sidecar_target(name: str) -> str | None:
    """The data file a sidecar's name belongs to (None: not a sidecar)."""
    ok = name.startswith(".") and name.endswith(SIDECAR) and len(name) > len(SIDECAR) + 1
    return name[1:-len(SIDECAR)] if ok else None


def folder_files(root: Path) -> list[Path]:
    """The files a folder's manifest covers: all, except hidden ones (temp files, locks),
    manifests and a checkpoint (`state/`, which has its own)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (Path(dirpath) == root and d.startswith("state")))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if not f.startswith(".") and not is_manifest(Path(f))]
    return out


def write_manifest(root: str | Path, files: Iterable[Path] | None = None, *,
                   pending: dict[str, bytes] | None = None, path: Path | None = None) -> Path:
    """Record `files` (default: `folder_files(root)`) and `pending` (name -> the bytes
    about to be written under that name) in `path` (default `root/manifest.json`)."""
    root = Path(root)
    path = path or root / MANIFEST
    if not enabled():
        return path
    with _timed():
        entries: dict[str, dict[str, Any]] = {}
        for f in folder_files(root) if files is None else files:
            entries[f.relative_to(root).as_posix()] = {"size": f.stat().st_size,
                                                       ALGO: hash_file(f)}
        for name, data in (pending or {}).items():
            entries[name] = {"size": len(data), ALGO: hash_bytes(data)}
        body = {"schema": SCHEMA, "algo": ALGO, "files": entries}
        return write_bytes(path, (json.dumps(body, indent=1) + "\n").encode())


def verify(manifest: str | Path) -> Verdict:
    """Check every file `manifest` lists: present, its size, its hash."""
    with _timed():
        return _verify(Path(manifest))


def _verify(manifest: Path) -> Verdict:
    v = Verdict(manifest)
    try:
        body = json.loads(manifest.read_text())
        entries = body["files"]
        if body.get("algo") != ALGO:
            raise ValueError(f"hash {body.get('algo')!r}, expected {ALGO!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        v.damaged[manifest.name] = f"the manifest itself is unreadable ({e})"
        return v
    root = manifest.parent
    for name, want in entries.items():
        f = root / name
        if not f.is_file():
            v.missing.append(name)
            continue
        size = f.stat().st_size
        if size != want["size"]:
            v.damaged[name] = _size_problem(size, want["size"])
        elif hash_file(f) != want[ALGO]:
            v.damaged[name] = "content differs from its recorded hash"
        else:
            v.intact.append(name)
    return v


def _size_problem(size: int, recorded: int) -> str:
    what = "empty" if size == 0 else "truncated" if size < recorded else "longer"
    return f"{what}: {size} bytes, recorded {recorded}"


# -------------------------------------------------------- one file with its sidecar


def sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}{SIDECAR}")


def write_file(path: Path, data: bytes) -> Path:
    """Write `data` to `path` with its sidecar manifest: data to a temp file, then the
    manifest, then the rename that makes the file exist (a kill leaves no file, or a file
    with its manifest)."""
    return write_bytes(path, data, lambda: write_manifest(
        path.parent, [], pending={path.name: data}, path=sidecar(path)))


def read_file(path: Path) -> bytes:
    """`path`'s bytes, checked against its sidecar; `IntegrityError` saying what is wrong
    if they differ or there is no sidecar (a file of an older undo: not verifiable)."""
    data = path.read_bytes()
    if enabled():
        with _timed():
            _check_bytes(path, data)
    return data


def _check_bytes(path: Path, data: bytes) -> None:
    m = sidecar(path)
    if not m.is_file():
        raise IntegrityError(f"{path}: no manifest ({m.name}), so it cannot be verified")
    try:
        want = json.loads(m.read_text())["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{path}: its manifest {m.name} is unreadable ({e})") from None
    if len(data) != want["size"]:
        raise IntegrityError(f"{path}: {_size_problem(len(data), want['size'])}")
    if hash_bytes(data) != want[ALGO]:
        raise IntegrityError(f"{path}: content differs from its recorded hash")


def report_rebuild(what: str, err: IntegrityError, action: str) -> None:
    """One line on stderr for a derived file found damaged and rebuilt."""
    print(f"undo: {what} damaged ({err}); {action}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- stage folders

_unverified_noted: set[str] = set()  # folders without a manifest, noted once a process


def force_kind(stage: Path) -> str:
    """The `--force` kind that re-runs `stage` (an attack folder is named by its model)."""
    if stage.parent.name == "attacks":
        return "attack"
    return _KINDS.get(stage.name.split("-", 1)[0], "KIND")


def check_stage(stage: str | Path) -> None:
    """Before a finished stage folder's files are reused: raise `IntegrityError` naming
    the damaged file and what to do. A folder without a manifest (written by an older
    undo, or not a stage folder) is used unverified, with a note once per process."""
    stage = Path(stage).resolve()
    m = stage / MANIFEST
    if not enabled():
        return
    if not m.is_file():
        if (stage / "summary.json").is_file() and str(stage) not in _unverified_noted:
            _unverified_noted.add(str(stage))
            print(f"undo: note: {stage} has no {MANIFEST} (written before integrity checks); "
                  "its files are used unverified", file=sys.stderr, flush=True)
        return
    v = verify(m)
    if v.ok:
        return
    raise IntegrityError(
        f"stage folder {stage} is damaged: {'; '.join(v.problems())}. Nothing that depends "
        f"on it was computed. {remake(stage)}; `undo verify` checks the whole run folder")


def check_model(model_dir: str | Path) -> None:
    """Before a model folder is loaded or fingerprinted: a stage's `model/` is checked
    with its stage (`check_stage`); a folder with its own manifest (`undo noise`,
    `undo export`) against it; others (a hub snapshot, a user's folder) are not."""
    d = Path(model_dir).resolve()
    if d.name == "model" and (d.parent / "summary.json").is_file():
        check_stage(d.parent)
    elif enabled() and (d / MANIFEST).is_file():
        v = verify(d / MANIFEST)
        if not v.ok:
            raise IntegrityError(f"model folder {d} is damaged: {'; '.join(v.problems())}. "
                                 f"Nothing was loaded. {remake(d)}")


def remake(folder: Path) -> str:
    """What to do about a damaged folder with a manifest, by what wrote it."""
    if folder.name.startswith("state"):
        return f"Delete {folder} (the stage then starts from step 0)"
    if (folder / "noise.json").is_file():
        return f"Write it again with `undo noise MODEL --out {folder}`"
    if (folder / "evidence").is_dir():
        return f"Delete it and export again with `undo export RUN_DIR --out {folder}`"
    return f"Re-run that stage with `--force {force_kind(folder)}` (or delete {folder})"


def check_file(path: Path, remedy: str) -> None:
    """Before a file with a sidecar is used where it lies (the search's SQLite, a run's
    summary.json read by `undo export`): raise `IntegrityError` naming what is wrong and
    `remedy`. Without a sidecar (a search killed while it ran, or an older undo) it is
    used unverified, with a note."""
    if not enabled():
        return
    m = sidecar(path)
    if not m.is_file():
        if path.is_file() and str(path) not in _unverified_noted:
            _unverified_noted.add(str(path))
            print(f"undo: note: {path} has no manifest (written by an interrupted run or "
                  "before integrity checks); it is used unverified", file=sys.stderr,
                  flush=True)
        return
    v = verify(m)
    if not v.ok:
        raise IntegrityError(f"{path} is damaged: {'; '.join(v.problems())}. It was not "
                             f"used. {remedy}")


# ------------------------------------------------------------------ undo verify


@dataclass
class Finding:
    """One line of `undo verify`: status is intact, damaged, rebuild or unverified."""

    status: str
    path: Path
    detail: str


# Files a run rebuilds when damaged or without a manifest (computed again exactly from what
# the run has): cache chunks, attack run files, search replays, search.json (from
# search.db), the sweep's table (from its cached unlearn stages); a run's summary.json
# (from its stages, by `undo run`) has a sidecar too, so it is listed as rebuilt.
_DERIVED_NAMES = ("search.json", "sweep.json", "selected.yaml")
# Result files with a sidecar that stop a run when damaged, and what to do instead.
_RESULTS = {"search.db": "the search stops; delete it (the search starts over) or run the "
                         "search with --force"}
# What a damaged sidecar-covered file stops: results above, and a run folder's config.yaml
# (undo.study.run_folder), which no run rebuilds over damage.
_DAMAGE_ACTIONS = {**_RESULTS,
                   "config.yaml": "undo run refuses the folder; delete it (the cached stages "
                                  "stay valid and the run writes it anew)"}


def _derived(f: Path) -> bool:
    return ((f.name.startswith("chunk-") and f.suffix == ".safetensors")
            or (f.parent.name in ("runs", "replays") and f.suffix == ".json")
            or f.name in _DERIVED_NAMES)


def scan(run_dir: str | Path) -> list[Finding]:
    """Check every manifest under `run_dir` (a run folder, or a folder `undo noise` or
    `undo export` wrote), every byte, and find what has none."""
    root = Path(run_dir)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        names = set(filenames)
        for name in sorted(names):
            f = here / name
            if name == MANIFEST:
                v = verify(f)
                if v.ok:
                    out.append(Finding("intact", here, f"{len(v.intact)} files"))
                for problem in v.problems():
                    out.append(Finding("damaged", here, f"{problem} -> using it stops. "
                                                        f"{remake(here)}"))
            elif (data := _sidecar_target(name)) is not None:
                v = verify(f)
                target = here / data
                if v.ok:
                    out.append(Finding("intact", target, "1 file"))
                for problem in v.problems():
                    out.append(Finding("damaged", target,
                                       f"{problem} -> {_DAMAGE_ACTIONS[data]}")
                               if data in _DAMAGE_ACTIONS else
                               Finding("rebuild", target, f"{problem} -> rebuilt when next "
                                                          "needed"))
            elif sidecar(f).name in names:
                continue
            elif _derived(f):
                out.append(Finding("rebuild", f, "no manifest -> rebuilt when next needed"))
            elif name in _RESULTS:
                out.append(Finding("unverified", f, "no manifest (an interrupted search or "
                                                    "an older undo): used unverified"))
        if "summary.json" in names and MANIFEST not in names and here.parent.name in (
                "stages", "attacks"):
            out.append(Finding("unverified", here, "finished stage without a manifest "
                                                   "(an older undo): used unverified"))
    return out
