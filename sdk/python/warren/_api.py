"""What each call sends and how its answer is read, shared by the sync and
asyncio clients so that the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from ._errors import WarrenError, error_from
from ._types import (Command, ExecResult, FileInfo, Frame, Image, ImageEvent, Info, PortToken, SandboxInfo,
                     from_dict)

DEFAULT_URL = "http://127.0.0.1:7070"

#: Retried on a dropped connection or one of these statuses, for requests
#: that change nothing.
RETRY_STATUSES = (502, 503, 504)

Body = Union[bytes, str, None]


@dataclasses.dataclass
class Call:
    """One HTTP request and the reader of its answer."""
    method: str
    path: str
    params: Optional[Dict[str, str]] = None
    json: Any = None
    content: Any = None
    content_type: Optional[str] = None
    parse: Optional[Callable[[Any], Any]] = None  # JSON answer -> value
    raw: bool = False  # answer is bytes, not JSON
    accept: Optional[str] = None

    @property
    def safe(self) -> bool:
        return self.method in ("GET", "HEAD") and self.content is None


def env_url(url: Optional[str]) -> str:
    return (url or os.environ.get("WARREN_URL") or DEFAULT_URL).rstrip("/")


def env_key(key: Optional[str]) -> Optional[str]:
    return key if key is not None else os.environ.get("WARREN_API_KEY")


def headers(api_key: Optional[str]) -> Dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def check(status: int, body: bytes) -> None:
    if status < 300:
        return
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    raise error_from(parsed, status)


def sandbox_path(sid: str, rest: str = "") -> str:
    return "/v1/sandboxes/" + quote(sid, safe="") + rest


def create_body(image: Optional[str] = None, runtime: Optional[str] = None, *, cpu: Optional[float] = None,
                memory_mb: Optional[int] = None, pids: Optional[int] = None, disk_mb: Optional[int] = None,
                env: Optional[Mapping[str, str]] = None, metadata: Optional[Mapping[str, str]] = None,
                timeout: Optional[int] = None, idle_timeout: Optional[int] = None, idle_action: Optional[str] = None,
                network: Optional[Mapping[str, Any]] = None, files: Optional[Sequence[Mapping[str, Any]]] = None,
                startup: Optional[Mapping[str, Any]] = None, volumes: Optional[Sequence[Mapping[str, Any]]] = None,
                secrets: Optional[Mapping[str, str]] = None,
                secret_files: Optional[Mapping[str, str]] = None,
                placement: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    for k, v in (("image", image), ("runtime", runtime), ("env", env), ("metadata", metadata),
                 ("timeout_seconds", timeout), ("idle_timeout_seconds", idle_timeout), ("idle_action", idle_action),
                 ("network", network), ("files", files), ("startup", startup), ("volumes", volumes),
                 ("secrets", secrets), ("secret_files", secret_files), ("placement", placement)):
        if v is not None:
            body[k] = dict(v) if isinstance(v, Mapping) else (list(v) if isinstance(v, (list, tuple)) else v)
    res = {k: v for k, v in (("cpu", cpu), ("memory_mb", memory_mb), ("pids", pids), ("disk_mb", disk_mb)) if v is not None}
    if res:
        body["resources"] = res
    return body


def exec_body(cmd: Union[str, Sequence[str]], env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
              stdin: Union[str, bytes, None] = None, timeout: Optional[float] = None,
              user: Optional[str] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {"cmd": cmd} if isinstance(cmd, str) else {"argv": list(cmd)}
    if env:
        body["env"] = dict(env)
    if cwd:
        body["cwd"] = cwd
    if user:
        body["user"] = user
    if stdin is not None:
        body["stdin"] = stdin.decode() if isinstance(stdin, bytes) else stdin
    if timeout:
        body["timeout_seconds"] = timeout
    return body


def sandbox(d: Any) -> SandboxInfo:
    return from_dict(SandboxInfo, d)


def sandboxes(d: Any) -> List[SandboxInfo]:
    return [sandbox(x) for x in d.get("sandboxes") or []]


def list_params(state: Union[str, Sequence[str], None], metadata: Optional[Mapping[str, str]],
                limit: Optional[int]) -> Dict[str, str]:
    params: Dict[str, str] = {}
    if state:
        params["state"] = state if isinstance(state, str) else ",".join(state)
    for k, v in (metadata or {}).items():
        params["metadata." + k] = v
    if limit:
        params["limit"] = str(limit)
    return params


def file_content(data: Union[bytes, str, Any]) -> Any:
    return data.encode() if isinstance(data, str) else data


def frame(line: Union[str, bytes]) -> Frame:
    d = json.loads(line)
    if d.get("type") == "error":
        raise error_from(d if isinstance(d.get("error"), dict) else
                         {"error": {"code": "internal", "message": d.get("message", "exec failed")}})
    return from_dict(Frame, d)


class ExecCollector:
    """Turns frames into an ExecResult, calling the handlers on the way."""

    def __init__(self, on_stdout: Optional[Callable[[str], Any]], on_stderr: Optional[Callable[[str], Any]]):
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        self.result: Optional[ExecResult] = None

    def feed(self, f: Frame) -> bool:
        """Takes a frame; True once the exit has come."""
        if f.type == "stdout" and self.on_stdout:
            self.on_stdout(f.data)
        elif f.type == "stderr" and self.on_stderr:
            self.on_stderr(f.data)
        elif f.type == "exit":
            self.result = ExecResult(exit_code=f.exit_code if f.exit_code is not None else -1, timed_out=f.timed_out,
                                     oom_killed=f.oom_killed, truncated=f.truncated, duration_ms=f.duration_ms)
            return True
        return False

    def done(self) -> ExecResult:
        if self.result is None:
            raise WarrenError("the exec stream ended without an exit", code="internal")
        return self.result


def image_line(line: Union[str, bytes], name: str, progress: Optional[Callable[[ImageEvent], Any]]) -> Optional[Image]:
    """Reads one line of a build's progress: the image at the end."""
    d = json.loads(line)
    if d.get("done") and isinstance(d.get("image"), dict):
        return from_dict(Image, d["image"])
    ev = from_dict(ImageEvent, d)
    if ev.error:
        raise WarrenError(f"build image {name}: {ev.error}", code="internal")
    if progress:
        progress(ev)
    return None


# The calls.

def info() -> Call:
    return Call("GET", "/v1/info", parse=lambda d: from_dict(Info, d))


def create(body: Dict[str, Any]) -> Call:
    return Call("POST", "/v1/sandboxes", json=body, parse=sandbox)


def get(sid: str) -> Call:
    return Call("GET", sandbox_path(sid), parse=sandbox)


def list_(params: Dict[str, str]) -> Call:
    return Call("GET", "/v1/sandboxes", params=params, parse=sandboxes)


def delete(sid: str) -> Call:
    return Call("DELETE", sandbox_path(sid), parse=sandbox)


def pause(sid: str) -> Call:
    return Call("POST", sandbox_path(sid, "/pause"), parse=sandbox)


def resume(sid: str) -> Call:
    return Call("POST", sandbox_path(sid, "/resume"), parse=sandbox)


def fork(sid: str, count: int) -> Call:
    return Call("POST", sandbox_path(sid, "/fork"), json={"count": count}, parse=sandboxes)


def set_network(sid: str, policy: Mapping[str, Any]) -> Call:
    return Call("PUT", sandbox_path(sid, "/network"), json=dict(policy), parse=sandbox)


def exec_(sid: str, body: Dict[str, Any]) -> Call:
    return Call("POST", sandbox_path(sid, "/exec"), json=body, parse=lambda d: from_dict(ExecResult, d))


def exec_stream(sid: str, body: Dict[str, Any]) -> Call:
    return Call("POST", sandbox_path(sid, "/exec/stream"), json=body)


def start_command(sid: str, name: str, cmd: str, env: Optional[Mapping[str, str]], cwd: Optional[str]) -> Call:
    body: Dict[str, Any] = {"name": name, "cmd": cmd}
    if env:
        body["env"] = dict(env)
    if cwd:
        body["cwd"] = cwd
    return Call("POST", sandbox_path(sid, "/commands"), json=body, parse=lambda d: from_dict(Command, d))


def commands(sid: str) -> Call:
    return Call("GET", sandbox_path(sid, "/commands"),
                parse=lambda d: [from_dict(Command, x) for x in d.get("commands") or []])


def command_logs(sid: str, name: str, follow: bool) -> Call:
    return Call("GET", sandbox_path(sid, "/commands/" + quote(name, safe="") + "/logs"),
                params={"follow": "true" if follow else "false"}, raw=True)


def read_file(sid: str, path: str) -> Call:
    return Call("GET", sandbox_path(sid, "/files"), params={"path": path}, raw=True)


def write_file(sid: str, path: str, data: Any, mode: Optional[str]) -> Call:
    params = {"path": path}
    if mode:
        params["mode"] = mode
    return Call("PUT", sandbox_path(sid, "/files"), params=params, content=file_content(data),
                content_type="application/octet-stream", parse=lambda d: from_dict(FileInfo, d))


def list_files(sid: str, path: str) -> Call:
    return Call("GET", sandbox_path(sid, "/files/list"), params={"path": path},
                parse=lambda d: [from_dict(FileInfo, x) for x in d.get("entries") or []])


def stat_file(sid: str, path: str) -> Call:
    return Call("GET", sandbox_path(sid, "/files/stat"), params={"path": path}, parse=lambda d: from_dict(FileInfo, d))


def mkdir(sid: str, path: str) -> Call:
    return Call("POST", sandbox_path(sid, "/files/mkdir"), params={"path": path}, parse=lambda d: from_dict(FileInfo, d))


def remove_file(sid: str, path: str, recursive: bool) -> Call:
    return Call("DELETE", sandbox_path(sid, "/files"), params={"path": path, "recursive": "true" if recursive else "false"})


def read_archive(sid: str, path: str) -> Call:
    return Call("GET", sandbox_path(sid, "/files/archive"), params={"path": path}, raw=True)


def write_archive(sid: str, path: str, data: Any) -> Call:
    return Call("PUT", sandbox_path(sid, "/files/archive"), params={"path": path}, content=data,
                content_type="application/x-tar", parse=lambda d: from_dict(FileInfo, d))


def expose_port(sid: str, port: int) -> Call:
    from ._types import Port
    return Call("POST", sandbox_path(sid, f"/ports/{int(port)}"), parse=lambda d: from_dict(Port, d))


def unexpose_port(sid: str, port: int) -> Call:
    return Call("DELETE", sandbox_path(sid, f"/ports/{int(port)}"))


def preview_token(sid: str, port: int, ttl: float) -> Call:
    return Call("POST", sandbox_path(sid, f"/ports/{int(port)}/token"), json={"ttl_seconds": int(ttl)},
                parse=lambda d: from_dict(PortToken, d))


def revoke_preview_tokens(sid: str, port: int, token_id: Optional[str]) -> Call:
    rest = f"/ports/{int(port)}/tokens" + ("/" + quote(token_id, safe="") if token_id else "")
    return Call("DELETE", sandbox_path(sid, rest))


def images() -> Call:
    return Call("GET", "/v1/images", parse=lambda d: [from_dict(Image, x) for x in d.get("images") or []])


def image(name: str) -> Call:
    return Call("GET", "/v1/images/" + quote(name, safe=""), parse=lambda d: from_dict(Image, d))


def pull_image(name: str, ref: str, auth: Optional[Mapping[str, str]]) -> Call:
    body: Dict[str, Any] = {"name": name, "ref": ref}
    if auth:
        body["auth"] = dict(auth)
    return Call("POST", "/v1/images", json=body, parse=lambda d: from_dict(Image, d))


def import_image(name: str, data: Any) -> Call:
    return Call("POST", "/v1/images/import", params={"name": name}, content=data, content_type="application/x-tar",
                parse=lambda d: from_dict(Image, d))


def build_dockerfile(name: str, context_tar: Any, dockerfile: Optional[str], args: Optional[Mapping[str, str]]) -> Call:
    params: Dict[str, Any] = {"name": name}
    if dockerfile:
        params["dockerfile"] = dockerfile
    if args:
        params["arg"] = [f"{k}={v}" for k, v in args.items()]
    return Call("POST", "/v1/images/build", params=params, content=context_tar, content_type="application/x-tar",
                parse=lambda d: from_dict(Image, d))


def delete_image(name: str) -> Call:
    return Call("DELETE", "/v1/images/" + quote(name, safe=""))


def prune_images() -> Call:
    return Call("POST", "/v1/images/prune", parse=lambda d: d)


def snapshot(sid: str, name: str) -> Call:
    return Call("POST", sandbox_path(sid, "/snapshot"), json={"name": name}, parse=lambda d: from_dict(Image, d))


def build_image(name: str) -> Call:
    return Call("POST", "/v1/images/" + quote(name, safe="") + "/build")


def ws_url(base: str, path: str, params: Optional[Dict[str, str]] = None) -> str:
    from urllib.parse import urlencode
    u = ("wss://" + base[len("https://"):]) if base.startswith("https://") else ("ws://" + base.split("://", 1)[-1])
    return u + path + ("?" + urlencode(params) if params else "")


def ws_protocols(api_key: Optional[str]) -> List[str]:
    """The subprotocols that carry the key: no header is needed, so every
    websockets version (and a browser) can send it."""
    return ["warren.v1"] + (["warren.key." + api_key] if api_key else [])
