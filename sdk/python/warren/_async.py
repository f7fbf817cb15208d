"""The asyncio client: the same calls as Warren, awaited."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Dict, List, Mapping, Optional, Sequence, Union

import httpx

from . import _api, _tar
from ._api import Call
from ._errors import WarrenError
from ._types import (Command, ExecResult, FileInfo, Frame, Image, ImageEvent, Info, Port, PortToken, SandboxInfo)
from ._ws import AsyncExecSession, AsyncPty, connect


class AsyncWarren:
    """A client for one warren server, for asyncio. See Warren."""

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, *, retries: int = 2,
                 timeout: Optional[float] = None, http: Optional[httpx.AsyncClient] = None):
        self.url = _api.env_url(url)
        self.api_key = _api.env_key(api_key)
        self.retries = retries
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=30.0))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncWarren":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, call: Call, stream: bool = False) -> httpx.Response:
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
                resp = await self._http.send(req, stream=stream)
            except httpx.TransportError as e:
                if attempt < tries:
                    await asyncio.sleep(0.2 * attempt)
                    continue
                raise WarrenError(f"{call.method} {call.path}: {e}", code="unavailable") from e
            if resp.status_code in _api.RETRY_STATUSES and attempt < tries:
                await resp.aclose()
                await asyncio.sleep(0.2 * attempt)
                continue
            if resp.status_code >= 300:
                body = await resp.aread()
                await resp.aclose()
                _api.check(resp.status_code, body)
            return resp
        raise AssertionError("unreachable")

    async def _do(self, call: Call) -> Any:
        resp = await self._send(call)
        if call.raw:
            return resp.content
        if call.parse is None:
            return None
        return call.parse(resp.json())

    async def _progress(self, call: Call, what: str, progress: Optional[Callable[[ImageEvent], Any]]) -> Image:
        """Runs a long image call: one JSON answer, or with progress the
        NDJSON events as they come."""
        if progress is None:
            return await self._do(call)
        call.accept = "application/x-ndjson"
        resp = await self._send(call, stream=True)
        try:
            async for line in resp.aiter_lines():
                if line.strip():
                    img = _api.image_line(line, what, progress)
                    if img is not None:
                        return img
        finally:
            await resp.aclose()
        raise WarrenError(f"{what}: the server ended the stream early", code="internal")

    async def info(self) -> Info:
        return await self._do(_api.info())

    async def images(self) -> List[Image]:
        return await self._do(_api.images())

    async def image(self, name: str) -> Image:
        return await self._do(_api.image(name))

    async def build_image(self, name: str, progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        resp = await self._send(_api.build_image(name), stream=True)
        try:
            async for line in resp.aiter_lines():
                if line.strip():
                    img = _api.image_line(line, name, progress)
                    if img is not None:
                        return img
        finally:
            await resp.aclose()
        raise WarrenError(f"build image {name}: the server ended the stream early", code="internal")

    async def pull_image(self, name: str, ref: str, auth: Optional[Mapping[str, str]] = None,
                   progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Pulls ``ref`` from its registry as the image ``name``; ``auth``
        is ``{"username", "password"}`` or ``{"token"}``, for this pull only."""
        return await self._progress(_api.pull_image(name, ref, auth), "pull " + ref, progress)

    async def import_image(self, name: str, data: Any, progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Imports a ``docker save`` or OCI layout tarball (bytes or a file)."""
        return await self._progress(_api.import_image(name, data), "import " + name, progress)

    async def build_dockerfile(self, name: str, context_dir: str, dockerfile: Optional[str] = None,
                         args: Optional[Mapping[str, str]] = None,
                         progress: Optional[Callable[[ImageEvent], Any]] = None) -> Image:
        """Builds ``name`` from a Dockerfile in ``context_dir`` (RUN in a
        sandbox); ``progress`` gets each step, RUN output line by line, and
        CACHED for steps that did not need to run."""
        return await self._progress(_api.build_dockerfile(name, _tar.pack(context_dir), dockerfile, args), "build " + name, progress)

    async def delete_image(self, name: str) -> None:
        await self._do(_api.delete_image(name))

    async def prune_images(self) -> Dict[str, int]:
        return await self._do(_api.prune_images())

    async def create_sandbox(self, image: Optional[str] = None, runtime: Optional[str] = None,
                             **options: Any) -> "AsyncSandbox":
        """Creates a sandbox; ``async with`` deletes it on exit. Options as
        for Warren.create_sandbox."""
        return AsyncSandbox(self, await self._do(_api.create(_api.create_body(image, runtime, **options))))

    async def get_sandbox(self, sandbox_id: str) -> "AsyncSandbox":
        return AsyncSandbox(self, await self._do(_api.get(sandbox_id)))

    async def list_sandboxes(self, state: Union[str, Sequence[str], None] = None,
                             metadata: Optional[Mapping[str, str]] = None,
                             limit: Optional[int] = None) -> List["AsyncSandbox"]:
        return [AsyncSandbox(self, d) for d in await self._do(_api.list_(_api.list_params(state, metadata, limit)))]


class AsyncSandbox:
    """A sandbox, for asyncio. See Sandbox."""

    def __init__(self, client: AsyncWarren, info: SandboxInfo):
        self._c = client
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def state(self) -> str:
        return self.info.state

    def __repr__(self) -> str:
        return f"<AsyncSandbox {self.id} {self.state}>"

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.delete()
        except WarrenError as e:
            if e.code != "not_found":
                raise

    async def _set(self, call: Call) -> "AsyncSandbox":
        self.info = await self._c._do(call)
        return self

    async def refresh(self) -> "AsyncSandbox":
        return await self._set(_api.get(self.id))

    async def delete(self) -> "AsyncSandbox":
        return await self._set(_api.delete(self.id))

    async def pause(self) -> "AsyncSandbox":
        return await self._set(_api.pause(self.id))

    async def resume(self) -> "AsyncSandbox":
        return await self._set(_api.resume(self.id))

    async def fork(self, count: int = 1) -> List["AsyncSandbox"]:
        return [AsyncSandbox(self._c, d) for d in await self._c._do(_api.fork(self.id, count))]

    async def snapshot(self, name: str) -> Image:
        """Makes the image ``name`` from this sandbox's files as they are."""
        return await self._c._do(_api.snapshot(self.id, name))

    async def set_network(self, policy: Mapping[str, Any]) -> "AsyncSandbox":
        return await self._set(_api.set_network(self.id, policy))

    async def exec(self, cmd: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None,
                   cwd: Optional[str] = None, stdin: Union[str, bytes, None] = None, timeout: Optional[float] = None,
                   user: Optional[str] = None, on_stdout: Optional[Callable[[str], Any]] = None,
                   on_stderr: Optional[Callable[[str], Any]] = None) -> ExecResult:
        body = _api.exec_body(cmd, env, cwd, stdin, timeout, user)
        if on_stdout is None and on_stderr is None:
            return await self._c._do(_api.exec_(self.id, body))
        collect = _api.ExecCollector(on_stdout, on_stderr)
        async for f in self._frames(body):
            if collect.feed(f):
                break
        return collect.done()

    def exec_stream(self, cmd: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None,
                    cwd: Optional[str] = None, stdin: Union[str, bytes, None] = None,
                    timeout: Optional[float] = None) -> AsyncIterator[Frame]:
        """``async for frame in sandbox.exec_stream(...)``."""
        return self._frames(_api.exec_body(cmd, env, cwd, stdin, timeout))

    async def _frames(self, body: Dict[str, Any]) -> AsyncIterator[Frame]:
        resp = await self._c._send(_api.exec_stream(self.id, body), stream=True)
        try:
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                f = _api.frame(line)
                yield f
                if f.type == "exit":
                    return
        finally:
            await resp.aclose()
        raise WarrenError("the exec stream ended without an exit", code="internal")

    async def exec_interactive(self, cmd: Union[str, Sequence[str]], *, env: Optional[Mapping[str, str]] = None,
                               cwd: Optional[str] = None, timeout: Optional[float] = None) -> AsyncExecSession:
        ws = await connect(_api.ws_url(self._c.url, _api.sandbox_path(self.id, "/exec/ws")),
                           _api.ws_protocols(self._c.api_key))
        s = AsyncExecSession(ws)
        await s.start(_api.exec_body(cmd, env, cwd, None, timeout))
        return s

    async def start_command(self, name: str, cmd: str, *, env: Optional[Mapping[str, str]] = None,
                            cwd: Optional[str] = None) -> Command:
        return await self._c._do(_api.start_command(self.id, name, cmd, env, cwd))

    async def commands(self) -> List[Command]:
        return await self._c._do(_api.commands(self.id))

    async def command_logs(self, name: str, follow: bool = False) -> AsyncIterator[bytes]:
        resp = await self._c._send(_api.command_logs(self.id, name, follow), stream=True)
        try:
            async for chunk in resp.aiter_bytes():
                yield chunk
        finally:
            await resp.aclose()

    async def read_file(self, path: str) -> bytes:
        return await self._c._do(_api.read_file(self.id, path))

    async def write_file(self, path: str, data: Union[bytes, str, Any], mode: Optional[str] = None) -> FileInfo:
        return await self._c._do(_api.write_file(self.id, path, data, mode))

    async def list_files(self, path: str) -> List[FileInfo]:
        return await self._c._do(_api.list_files(self.id, path))

    async def stat_file(self, path: str) -> FileInfo:
        return await self._c._do(_api.stat_file(self.id, path))

    async def mkdir(self, path: str) -> FileInfo:
        return await self._c._do(_api.mkdir(self.id, path))

    async def remove_file(self, path: str, recursive: bool = False) -> None:
        await self._c._do(_api.remove_file(self.id, path, recursive))

    async def read_archive(self, path: str) -> bytes:
        return await self._c._do(_api.read_archive(self.id, path))

    async def write_archive(self, path: str, tar: bytes) -> FileInfo:
        return await self._c._do(_api.write_archive(self.id, path, tar))

    async def upload_dir(self, local_dir: str, path: str) -> FileInfo:
        return await self.write_archive(path, _tar.pack(local_dir))

    async def download_dir(self, path: str, local_dir: str, max_bytes: Optional[int] = None) -> None:
        _tar.unpack(await self.read_archive(path), local_dir, max_bytes)

    async def pty(self, cols: int = 80, rows: int = 24) -> AsyncPty:
        url = _api.ws_url(self._c.url, _api.sandbox_path(self.id, "/pty"), {"cols": str(cols), "rows": str(rows)})
        return AsyncPty(await connect(url, _api.ws_protocols(self._c.api_key)))

    async def expose_port(self, port: int) -> Port:
        return await self._c._do(_api.expose_port(self.id, port))

    async def unexpose_port(self, port: int) -> None:
        await self._c._do(_api.unexpose_port(self.id, port))

    async def preview_token(self, port: int, ttl: float = 3600) -> PortToken:
        return await self._c._do(_api.preview_token(self.id, port, ttl))

    async def revoke_preview_tokens(self, port: int, token_id: Optional[str] = None) -> None:
        await self._c._do(_api.revoke_preview_tokens(self.id, port, token_id))
