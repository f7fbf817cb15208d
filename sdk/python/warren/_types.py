"""The API's shapes as dataclasses. Names and fields follow the wire
contract (docs/API.md); unknown fields from a newer server are ignored."""

from __future__ import annotations

import dataclasses
import re
import sys
from datetime import datetime
from typing import Any, Dict, List, Optional, Type, TypeVar, Union

if sys.version_info >= (3, 11):
    from typing import TypedDict, NotRequired
else:  # pragma: no cover
    from typing_extensions import TypedDict, NotRequired  # type: ignore

T = TypeVar("T")

_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(v: Optional[str]) -> Optional[datetime]:
    """Parses the API's RFC 3339 times (nanoseconds, "Z") on any Python."""
    if not v:
        return None
    v = _FRACTION.sub(r"\1", v.replace("Z", "+00:00"))
    return datetime.fromisoformat(v)


def from_dict(cls: Type[T], d: Any) -> T:
    """Builds a dataclass from a JSON object, converting nested shapes."""
    if not isinstance(d, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(d).__name__}")
    kwargs: Dict[str, Any] = {}
    hints = _NESTED.get(cls, {})
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in d:
            continue
        v = d[f.name]
        conv = hints.get(f.name)
        if conv is not None and v is not None:
            v = conv(v)
        kwargs[f.name] = v
    return cls(**kwargs)


@dataclasses.dataclass
class Resources:
    cpu: float = 0
    memory_mb: int = 0
    pids: int = 0
    disk_mb: int = 0


@dataclasses.dataclass
class Memory:
    limit_mb: int = 0
    used_mb: float = 0
    host_mb: float = 0
    host_peak_mb: float = 0
    oom_kills: int = 0


@dataclasses.dataclass
class Port:
    port: int = 0
    url: str = ""
    path_url: str = ""


@dataclasses.dataclass
class NetworkPolicy:
    egress: str = "default"
    allow: List[str] = dataclasses.field(default_factory=list)
    deny: List[str] = dataclasses.field(default_factory=list)


#: The states a sandbox passes through; ``deleted`` and ``failed`` are final.
STATES = ("creating", "running", "pausing", "paused", "resuming", "forking", "deleting", "deleted", "failed")


@dataclasses.dataclass
class SandboxInfo:
    """A sandbox as the API shows it."""
    id: str = ""
    state: str = ""
    runtime: str = ""
    image: str = ""
    resources: Resources = dataclasses.field(default_factory=Resources)
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)
    timeout_seconds: int = 0
    idle_timeout_seconds: int = 0
    idle_action: str = ""
    network: Optional[NetworkPolicy] = None
    # The node it lives on, in a cluster.
    node: str = ""
    address: str = ""
    ports: List[Port] = dataclasses.field(default_factory=list)
    created_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None
    boot_path: str = ""
    timings: Dict[str, int] = dataclasses.field(default_factory=dict)
    reason: str = ""
    memory: Optional[Memory] = None
    # The org's volumes and secrets it names (never values).
    volumes: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    secrets: Dict[str, str] = dataclasses.field(default_factory=dict)
    secret_files: Dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExecResult:
    """A command's outcome. A non-zero exit is a result, not an error."""
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    truncated: bool = False
    oom_killed: bool = False
    duration_ms: int = 0


@dataclasses.dataclass
class Frame:
    """One message of a streaming exec: ``stdout``, ``stderr`` or ``exit``."""
    type: str = ""
    data: str = ""
    exit_code: Optional[int] = None
    timed_out: bool = False
    oom_killed: bool = False
    truncated: bool = False
    duration_ms: int = 0
    message: str = ""


@dataclasses.dataclass
class FileInfo:
    name: str = ""
    path: str = ""
    type: str = ""  # file, dir, symlink or other
    size: int = 0
    mode: str = ""
    mtime: Optional[datetime] = None


@dataclasses.dataclass
class Command:
    """A background command's state."""
    name: str = ""
    cmd: str = ""
    state: str = ""  # running or exited
    exit_code: Optional[int] = None
    oom_killed: bool = False
    pid: int = 0
    started_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None


@dataclasses.dataclass
class PortToken:
    """A signed, expiring preview link."""
    url: str = ""
    token: str = ""
    token_id: str = ""
    expires_at: Optional[datetime] = None


@dataclasses.dataclass
class ImageConfig:
    """What an image says about running it: env, working_dir and user are
    the defaults of its sandboxes' execs."""
    env: List[str] = dataclasses.field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    entrypoint: List[str] = dataclasses.field(default_factory=list)
    cmd: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Image:
    name: str = ""
    state: str = ""
    kind: str = ""  # builtin, registry, import, dockerfile or snapshot
    ref: str = ""
    digest: str = ""
    config: Optional[ImageConfig] = None
    source: str = ""
    size_bytes: int = 0
    built_at: Optional[datetime] = None
    build_ms: int = 0
    error: str = ""
    progress: str = ""
    format: int = 0


@dataclasses.dataclass
class ImageEvent:
    image: str = ""
    step: str = ""
    message: str = ""
    done: bool = False
    error: str = ""


@dataclasses.dataclass
class PoolStatus:
    image: str = ""
    runtime: str = ""
    size: int = 0
    ready: int = 0


@dataclasses.dataclass
class Info:
    version: str = ""
    runtimes: List[str] = dataclasses.field(default_factory=list)
    default_runtime: str = ""
    pools: List[PoolStatus] = dataclasses.field(default_factory=list)
    org: str = ""
    warnings: List[str] = dataclasses.field(default_factory=list)


def _list(cls: Type[T]) -> Any:
    return lambda v: [from_dict(cls, x) for x in v]


def _one(cls: Type[T]) -> Any:
    return lambda v: from_dict(cls, v)


_NESTED: Dict[type, Dict[str, Any]] = {
    SandboxInfo: {"resources": _one(Resources), "network": _one(NetworkPolicy), "ports": _list(Port),
                  "created_at": parse_time, "expires_at": parse_time, "ended_at": parse_time, "memory": _one(Memory)},
    FileInfo: {"mtime": parse_time},
    Command: {"started_at": parse_time, "ended_at": parse_time},
    PortToken: {"expires_at": parse_time},
    Image: {"built_at": parse_time, "config": _one(ImageConfig)},
    Info: {"pools": _list(PoolStatus)},
}


# Request shapes, for type checkers; plain dicts work the same.

class FileSpec(TypedDict):
    """A file written into a sandbox at create."""
    path: str
    content: str
    encoding: NotRequired[str]  # utf8 (default) or base64
    mode: NotRequired[str]


class StartupCommand(TypedDict):
    name: str
    run: str
    background: NotRequired[bool]


class ReadyCheck(TypedDict, total=False):
    http: str
    tcp: str
    command: str
    timeout_seconds: float


class GitSpec(TypedDict):
    url: str
    ref: NotRequired[str]
    depth: NotRequired[int]


class Startup(TypedDict, total=False):
    git: GitSpec
    files: List[FileSpec]
    env: Dict[str, str]
    commands: List[StartupCommand]
    ports: List[int]
    ready: ReadyCheck


class NetworkSpec(TypedDict):
    egress: str  # default, none or allowlist
    allow: NotRequired[List[str]]
    deny: NotRequired[List[str]]


Command_ = Union[str, List[str]]
