"""Directories as tar streams. Unpacking treats the stream as hostile (it
comes from a sandbox): nothing is written outside the target directory,
links that lead out are refused, and the total size can be bounded."""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from typing import Optional


def pack(local_dir: str) -> bytes:
    """A tar stream of the tree under local_dir, names relative to it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(local_dir)):
            tf.add(os.path.join(local_dir, name), arcname=name, recursive=True)
    return buf.getvalue()


def _local(name: str) -> bool:
    norm = posixpath.normpath(name)
    return not (posixpath.isabs(name) or norm == ".." or norm.startswith("../"))


def unpack(data: bytes, local_dir: str, max_bytes: Optional[int] = None) -> None:
    """Extracts a tar stream into local_dir (created)."""
    os.makedirs(local_dir, exist_ok=True)
    root = os.path.realpath(local_dir)
    written = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            name = m.name.rstrip("/")
            if name in ("", "."):
                continue
            if not _local(name):
                raise ValueError(f"tar entry {m.name!r}: the name leaves the directory")
            dest = os.path.join(root, *posixpath.normpath(name).split("/"))
            parent = os.path.realpath(os.path.dirname(dest))
            # A parent that is (or passes through) a link leading out.
            if parent != root and not parent.startswith(root + os.sep):
                raise ValueError(f"tar entry {m.name!r}: a link in its path leaves the directory")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.islink(dest) or (os.path.exists(dest) and not os.path.isdir(dest)):
                os.unlink(dest)
            if m.isdir():
                os.makedirs(dest, exist_ok=True)
                os.chmod(dest, m.mode & 0o777)
            elif m.isreg():
                written += m.size
                if max_bytes is not None and written > max_bytes:
                    raise ValueError(f"the tree is larger than {max_bytes} bytes")
                src = tf.extractfile(m)
                assert src is not None
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), m.mode & 0o777)
                with os.fdopen(fd, "wb") as out:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
            elif m.issym():
                target = m.linkname
                if posixpath.isabs(target) or not _local(posixpath.join(posixpath.dirname(name), target)):
                    raise ValueError(f"tar entry {m.name!r}: symbolic link to {target!r} leaves the directory")
                os.symlink(target, dest)
            elif m.islnk():
                if not _local(m.linkname):
                    raise ValueError(f"tar entry {m.name!r}: hard link to {m.linkname!r} leaves the directory")
                src_path = os.path.realpath(os.path.join(root, *posixpath.normpath(m.linkname).split("/")))
                if not src_path.startswith(root + os.sep):
                    raise ValueError(f"tar entry {m.name!r}: hard link leaves the directory")
                os.link(src_path, dest)
            # devices, fifos: not a sandbox's files to hand out
