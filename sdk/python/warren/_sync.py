"""The blocking client."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from . import _api, _tar
from ._api import Call
from ._errors import WarrenError
from ._types import (Command, ExecResult, FileInfo, Frame, Image, ImageEvent, Info, Port, PortToken, SandboxInfo)
from ._ws import AsyncExecSession, AsyncPty, ExecSession, LoopThread, Pty, connect


class Warren:
    """A client for one warren server.

    ``url`` and ``api_key`` default to ``WARREN_URL`` (else
    http://127.0.0.1:7070) and ``WARREN_API_KEY``. Use it as a context
    manager, or call ``close()``.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, *, retries: int = 2,
                 timeout: Optional[float] = None, http: Optional[httpx.Client] = None):
        self.url = _api.env_url(url)
        self.api_key = _api.env_key(api_key)
        self.retries = retries
        # No read timeout by default: an exec lasts as long as its command.
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout, connect=30.0))
        self._loop: Optional[LoopThread] = None

    def close(self) -> None:
        self._http.close()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> "Warren":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # Transport.

    def _send(self, call: Call, stream: bool = False) -> httpx.Response:
        tries = 1 + (max(self.retries, 0) if call.safe else 0)
        headers = _api.headers(self.api_key)
        if call.content_type:
            headers["Content-Type"] = call.content_type
        if call.accept:
            headers["Accept"] = call.accept
        for attempt in range(1, tries + 1):
            try:
                req = self._http.build_request(call.method, self.url + call.path, params=call.params, json=call.json,
                                               content=call.content, headers=headers)
                resp = self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                if attempt < tries:
                    time.sleep(0.2 * attempt)
                    continue
                raise WarrenError(f"{call.method} {call.path}: {e}", code="unavailable") from e
            if resp.status_code in _api.RETRY_STATUSES and attempt < tries:
                resp.close()
                time.sleep(0.2 * attempt)
                continue
            if resp.status_code >= 300:
                body = resp.read()
                resp.close()
                _api.check(resp.status_code, body)
            return resp
        raise AssertionError("unreachable")

    def _do(self, call: Call) -> Any:
        resp = self._send(call)
        if call.raw:
            return resp.content
        if call.parse is None:
            return None
        return call.parse(resp.json())

    def _ws_loop(self) -> LoopThread:
        if self._loop is None:
            self._loop = LoopThread()
        return self._loop

    def _progress(self, call: Call, what: str, progress: Optional[Callable[[ImageEvent], Any]]) -> Image:
        """Runs a long image call: one JSON answer, or with progress the
        NDJSON events as they come."""
        if progress is None:
            return self._do(call)
        call.accept = "application/x-ndjson"
        resp = self._send(call, stream=True)
        try:
            for line in resp.iter_lines():
                if line.strip():
                    img = _api.image_line(line, what, progress)
                    if img is not None:
                        return img
        finally:
            resp.close()
        raise WarrenError(f"{what}: the server ended the stream early", code="internal")

    # The server.

    def info(self) -> Info:
        """Version, runtimes, warm pools and isolation warnings."""
        return self._do(_api.info())

    def images(self) -> List[Image]:
        return self._do(_api.images())

    def image(self, name: str) -> Image:
        return self._do(_api.image(name))

    def build_image(self, name: str, progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Builds an image unless it is ready, reporting each step."""
        resp = self._send(_api.build_image(name), stream=True)
        try:
            for line in resp.iter_lines():
                if line.strip():
                    img = _api.image_line(line, name, progress)
                    if img is not None:
                        return img
        finally:
            resp.close()
        raise WarrenError(f"build image {name}: the server ended the stream early", code="internal")

    # Sandboxes.

    def pull_image(self, name: str, ref: str, auth: Optional[Mapping[str, str]] = None,
                   progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Pulls ``ref`` from its registry as the image ``name``; ``auth``
        is ``{"username", "password"}`` or ``{"token"}``, for this pull only."""
        return self._progress(_api.pull_image(name, ref, auth), "pull " + ref, progress)

    def import_image(self, name: str, data: Any, progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Imports a ``docker save`` or OCI layout tarball (bytes or a file)."""
        return self._progress(_api.import_image(name, data), "import " + name, progress)

    def build_dockerfile(self, name: str, context_dir: str, dockerfile: Optional[str] = None,
                         args: Optional[Mapping[str, str]] = None,
                         progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Builds ``name`` from a Dockerfile in ``context_dir`` (RUN in a
        sandbox); ``progress`` gets each step, RUN output line by line, and
        CACHED for steps that did not need to run."""
        return self._progress(_api.build_dockerfile(name, _tar.pack(context_dir), dockerfile, args), "build " + name, progress)

    def delete_image(self, name: str) -> None:
        self._do(_api.delete_image(name))

    def prune_images(self) -> Dict[str, int]:
        return self._do(_api.prune_images())

    def create_sandbox(self, image: Optional[str] = None, runtime: Optional[str] = None, **options: Any) -> "Sandbox":
        """Creates a sandbox and returns it running, its startup done.

        Options: ``cpu``, ``memory_mb``, ``pids``, ``disk_mb``, ``env``,
        ``metadata``, ``timeout`` and ``idle_timeout`` (seconds),
        ``idle_action``, ``network``, ``files``, ``startup``, ``volumes``,
        ``secrets``, ``secret_files``, ``placement`` (see docs/API.md). As a context manager it is deleted on exit.
        """
        return Sandbox(self, self._do(_api.create(_api.create_body(image, runtime, **options))))

    def get_sandbox(self, sandbox_id: str) -> "Sandbox":
        return Sandbox(self, self._do(_api.get(sandbox_id)))

    def list_sandboxes(self, state: Union[str, Sequence[str], None] = None,
                       metadata: Optional[Mapping[str, str]] = None, limit: Optional[int] = None) -> List["Sandbox"]:
        """The organization's sandboxes, newest first."""
        return [Sandbox(self, d) for d in self._do(_api.list_(_api.list_params(state, metadata, limit)))]


class Sandbox:
    """A sandbox: ``id`` and ``info`` (as last fetched), and everything to
    do in it. As a context manager it is deleted on exit."""

    def __init__(self, client: Warren, info: SandboxInfo):
        self._c = client
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def state(self) -> str:
        return self.info.state

    def __repr__(self) -> str:
        return f"<Sandbox {self.id} {self.state}>"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.delete()
        except WarrenError as e:
            if e.code != "not_found":
                raise

    def _set(self, info: SandboxInfo) -> "Sandbox":
        self.info = info
        return self

    def refresh(self) -> "Sandbox":
        return self._set(self._c._do(_api.get(self.id)))

    def delete(self) -> "Sandbox":
        return self._set(self._c._do(_api.delete(self.id)))

    def pause(self) -> "Sandbox":
        return self._set(self._c._do(_api.pause(self.id)))

    def resume(self) -> "Sandbox":
        return self._set(self._c._do(_api.resume(self.id)))

    def fork(self, count: int = 1) -> List["Sandbox"]:
        return [Sandbox(self._c, d) for d in self._c._do(_api.fork(self.id, count))]

    def snapshot(self, name: str) -> Image:
        """Makes the image ``name`` from this sandbox's files as they are."""
        return self._c._do(_api.snapshot(self.id, name))

    def set_network(self, policy: Mapping[str, Any]) -> "Sandbox":
        return self._set(self._c._do(_api.set_network(self.id, policy)))

    # Commands.

    def exec(self, cmd: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             stdin: Union[str, bytes, None] = None, timeout: Optional[float] = None,
             user: Optional[str] = None, on_stdout: Optional[Callable[[str], Any]] = None,
             on_stderr: Optional[Callable[[str], Any]] = None) -> ExecResult:
        """Runs a command to completion: a string runs under /bin/sh -c, a
        list is the argv. With ``on_stdout``/``on_stderr`` the output is
        streamed to them as it comes (and not kept in the result)."""
        body = _api.exec_body(cmd, env, cwd, stdin, timeout, user)
        if on_stdout is None and on_stderr is None:
            return self._c._do(_api.exec_(self.id, body))
        collect = _api.ExecCollector(on_stdout, on_stderr)
        for f in self._frames(body):
            if collect.feed(f):
                break
        return collect.done()

    def exec_stream(self, cmd: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, stdin: Union[str, bytes, None] = None,
                    timeout: Optional[float] = None) -> Iterator[Frame]:
        """Runs a command, yielding its frames as they come: stdout and
        stderr, then one exit."""
        return self._frames(_api.exec_body(cmd, env, cwd, stdin, timeout))

    def _frames(self, body: Dict[str, Any]) -> Iterator[Frame]:
        resp = self._c._send(_api.exec_stream(self.id, body), stream=True)
        try:
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                f = _api.frame(line)
                yield f
                if f.type == "exit":
                    return
        finally:
            resp.close()
        raise WarrenError("the exec stream ended without an exit", code="internal")

    def exec_interactive(self, cmd: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None,
                         cwd: Optional[str] = None, timeout: Optional[float] = None) -> ExecSession:
        """Starts a command whose stdin you write as it runs."""
        loop = self._c._ws_loop()

        async def open_() -> AsyncExecSession:
            ws = await connect(_api.ws_url(self._c.url, _api.sandbox_path(self.id, "/exec/ws")),
                               _api.ws_protocols(self._c.api_key))
            s = AsyncExecSession(ws)
            await s.start(_api.exec_body(cmd, env, cwd, None, timeout))
            return s
        return ExecSession(loop, loop.run(open_()))

    def start_command(self, name: str, cmd: str, *, env: Optional[Mapping[str, str]] = None,
                      cwd: Optional[str] = None) -> Command:
        """Starts a named background command that outlives the call."""
        return self._c._do(_api.start_command(self.id, name, cmd, env, cwd))

    def commands(self) -> List[Command]:
        return self._c._do(_api.commands(self.id))

    def command_logs(self, name: str, follow: bool = False) -> Iterator[bytes]:
        """A background command's output from its start; with ``follow``,
        until it exits."""
        resp = self._c._send(_api.command_logs(self.id, name, follow), stream=True)
        try:
            yield from resp.iter_bytes()
        finally:
            resp.close()

    # Files.

    def read_file(self, path: str) -> bytes:
        return self._c._do(_api.read_file(self.id, path))

    def write_file(self, path: str, data: Union[bytes, str, Any], mode: Optional[str] = None) -> FileInfo:
        """Writes bytes, text or a file object; parents are created."""
        return self._c._do(_api.write_file(self.id, path, data, mode))

    def list_files(self, path: str) -> List[FileInfo]:
        return self._c._do(_api.list_files(self.id, path))

    def stat_file(self, path: str) -> FileInfo:
        return self._c._do(_api.stat_file(self.id, path))

    def mkdir(self, path: str) -> FileInfo:
        return self._c._do(_api.mkdir(self.id, path))

    def remove_file(self, path: str, recursive: bool = False) -> None:
        self._c._do(_api.remove_file(self.id, path, recursive))

    def read_archive(self, path: str) -> bytes:
        """A directory as a tar stream."""
        return self._c._do(_api.read_archive(self.id, path))

    def write_archive(self, path: str, tar: bytes) -> FileInfo:
        """Unpacks a tar stream into a directory (created)."""
        return self._c._do(_api.write_archive(self.id, path, tar))

    def upload_dir(self, local_dir: str, path: str) -> FileInfo:
        return self.write_archive(path, _tar.pack(local_dir))

    def download_dir(self, path: str, local_dir: str, max_bytes: Optional[int] = None) -> None:
        """Copies a directory out; nothing is written outside local_dir."""
        _tar.unpack(self.read_archive(path), local_dir, max_bytes)

    # Terminals and ports.

    def pty(self, cols: int = 80, rows: int = 24) -> Pty:
        """A login shell on a terminal."""
        loop = self._c._ws_loop()

        async def open_() -> AsyncPty:
            url = _api.ws_url(self._c.url, _api.sandbox_path(self.id, "/pty"), {"cols": str(cols), "rows": str(rows)})
            return AsyncPty(await connect(url, _api.ws_protocols(self._c.api_key)))
        return Pty(loop, loop.run(open_()))

    def expose_port(self, port: int) -> Port:
        return self._c._do(_api.expose_port(self.id, port))

    def unexpose_port(self, port: int) -> None:
        self._c._do(_api.unexpose_port(self.id, port))

    def preview_token(self, port: int, ttl: float = 3600) -> PortToken:
        """A signed link to an exposed port, valid for ``ttl`` seconds."""
        return self._c._do(_api.preview_token(self.id, port, ttl))

    def revoke_preview_tokens(self, port: int, token_id: Optional[str] = None) -> None:
        self._c._do(_api.revoke_preview_tokens(self.id, port, token_id))
