"""Nothing half-written or corrupt is ever used: atomic writes, and manifests of sizes and
content hashes checked on read.

Every file is written beside and renamed into place (`write_bytes`), so a reader never
sees half a file. A manifest (`manifest.json`) records, for files under the folder it sits
in, each file's size and xxh3-128 hash. It is written after the data and before the step that makes the
data count (a stage's `summary.json`, a checkpoint's `done`, a file's rename into place),
so a manifest never vouches for data that is not there yet, and data that counts always
has its manifest. Two forms:

- a folder's manifest: a finished stage folder (`stages.base.finish`), a checkpoint
  (`checkpoint.save_state`); checked by `artifacts.is_done` and `artifacts.model_folder`
  (`check_stage`, `check_model`) and by `checkpoint.resumable`;
- one file's sidecar `.NAME.manifest` (hidden, so no reader's glob for the data, e.g.
  `chunk-*` or `runs/*.json`, meets it): a teacher-cache chunk, an attack run file,
  which independent runs write one by one into a shared folder.

What is checked when, and what a mismatch does: docs/integrity.md. In short: every byte
of every file at every reuse (xxh3 hashes a page-cached file at 9-22 GiB/s here, far
faster than loading it: benchmarks/integrity.py); derived files (chunks, run files) are rebuilt,
stage outputs and checkpoints stop the run (`IntegrityError`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from .configlib import ConfigError

MANIFEST = "manifest.json"
SIDECAR = ".manifest"  # `.chunk-0-00001.safetensors.manifest` beside its chunk
SCHEMA = "undo.manifest/1"
# Non-cryptographic (this guards against damage, not an adversary) and 15-20x faster
# than blake2b here (benchmarks/results/integrity.json); xxhash comes with `datasets`.
ALGO = "xxh3_128"
_BLOCK = 8 << 20
# Stage-folder prefixes -> the `--force` kind that re-runs them (docs/integrity.md).
_KINDS = {"pretrain": "pretrain", "import": "pretrain", "unlearn": "unlearn",
          "sweep": "unlearn", "distill": "distill (or oracle)"}


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
    entries: dict[str, dict[str, Any]] = {}
    for f in folder_files(root) if files is None else files:
        entries[f.relative_to(root).as_posix()] = {"size": f.stat().st_size,
                                                   ALGO: hash_file(f)}
    for name, data in (pending or {}).items():
        entries[name] = {"size": len(data), ALGO: hash_bytes(data)}
    body = {"schema": SCHEMA, "algo": ALGO, "files": entries}
    return write_bytes(path or root / MANIFEST, (json.dumps(body, indent=1) + "\n").encode())


def verify(manifest: str | Path) -> Verdict:
    """Check every file `manifest` lists: present, its size, its hash."""
    manifest = Path(manifest)
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
        path.parent, pending={path.name: data}, path=sidecar(path)))


def read_file(path: Path) -> bytes:
    """`path`'s bytes, checked against its sidecar; `IntegrityError` saying what is wrong
    if they differ or there is no sidecar (a file of an older undo: not verifiable)."""
    m = sidecar(path)
    if not m.is_file():
        raise IntegrityError(f"{path}: no manifest ({m.name}), so it cannot be verified")
    data = path.read_bytes()
    try:
        want = json.loads(m.read_text())["files"][path.name]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{path}: its manifest {m.name} is unreadable ({e})") from None
    if len(data) != want["size"]:
        raise IntegrityError(f"{path}: {_size_problem(len(data), want['size'])}")
    if hash_bytes(data) != want[ALGO]:
        raise IntegrityError(f"{path}: content differs from its recorded hash")
    return data


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
        f"on it was computed. Re-run that stage with `--force {force_kind(stage)}` (or "
        f"delete {stage}); `undo verify` checks the whole run folder")


def check_model(model_dir: str | Path) -> None:
    """`check_stage` for a model folder that is a stage's `model/` (other folders: none)."""
    d = Path(model_dir).resolve()
    if d.name == "model" and (d.parent / "summary.json").is_file():
        check_stage(d.parent)


# ------------------------------------------------------------------ undo verify


@dataclass
class Finding:
    """One line of `undo verify`: status is intact, damaged, rebuild or unverified."""

    status: str
    path: Path
    detail: str


def _derived(f: Path) -> bool:
    """A file the run rebuilds when it is damaged: a cache chunk or an attack run file."""
    return ((f.name.startswith("chunk-") and f.suffix == ".safetensors")
            or (f.parent.name == "runs" and f.suffix == ".json"))


def scan(run_dir: str | Path) -> list[Finding]:
    """Check every manifest under `run_dir`, every byte, and find what has none."""
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
                checkpoint = here.name.startswith("state")
                if v.ok:
                    out.append(Finding("intact", here, f"{len(v.intact)} files"))
                for problem in v.problems():
                    todo = (f"resuming stops; delete {here} to start the stage over"
                            if checkpoint else
                            f"reusing it stops; re-run it with --force {force_kind(here)}")
                    out.append(Finding("damaged", here, f"{problem} -> {todo}"))
            elif (data := _sidecar_target(name)) is not None:
                v = verify(f)
                target = here / data
                if v.ok:
                    out.append(Finding("intact", target, "1 file"))
                for problem in v.problems():
                    out.append(Finding("rebuild", target,
                                       f"{problem} -> rebuilt when next needed"))
            elif _derived(f) and sidecar(f).name not in names:
                out.append(Finding("rebuild", f, "no manifest -> rebuilt when next needed"))
        if "summary.json" in names and MANIFEST not in names and here.parent.name in (
                "stages", "attacks"):
            out.append(Finding("unverified", here, "finished stage without a manifest "
                                                   "(an older undo): used unverified"))
    return out
