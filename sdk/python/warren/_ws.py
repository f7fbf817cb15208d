"""WebSocket sessions: a terminal (PTY) and an exec with stdin, for the
asyncio client, and their blocking wrappers for the sync client (which run
the same coroutines on a private event loop thread)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Coroutine, Dict, Optional, TypeVar, Union

import websockets

from ._errors import WarrenError, error_from
from ._types import Frame, from_dict

T = TypeVar("T")

MAX_FRAME = 1 << 20


async def connect(url: str, protocols: list) -> Any:
    try:
        return await websockets.connect(url, subprotocols=protocols, max_size=16 << 20, open_timeout=30)  # type: ignore[arg-type]
    except Exception as e:  # a refused upgrade: map its status
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        if status:
            body = getattr(getattr(e, "response", None), "body", b"") or b""
            try:
                parsed: Any = json.loads(body)
            except ValueError:
                parsed = f"HTTP {status}"
            raise error_from(parsed, int(status)) from None
        raise


def _control(msg: str) -> Optional[Frame]:
    """Reads a text message: a frame, or raises the server's error."""
    d = json.loads(msg)
    if isinstance(d.get("error"), dict):
        raise error_from(d)
    if d.get("type") == "error":
        raise WarrenError(d.get("message", "session failed"), code="internal")
    return from_dict(Frame, d)


class AsyncPty:
    """A shell on a terminal. ``read()`` returns output bytes (b"" once the
    shell has exited; ``exit_code`` then says how)."""

    def __init__(self, ws: Any):
        self._ws = ws
        self.exit_code: Optional[int] = None

    async def read(self) -> bytes:
        while True:
            try:
                msg = await self._ws.recv()
            except websockets.ConnectionClosed:
                return b""
            if isinstance(msg, bytes):
                return msg
            f = _control(msg)
            if f is not None and f.type == "exit":
                self.exit_code = f.exit_code

    async def write(self, data: Union[bytes, str]) -> None:
        await self._ws.send(data.encode() if isinstance(data, str) else bytes(data))

    async def resize(self, cols: int, rows: int) -> None:
        await self._ws.send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> "AsyncPty":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncExecSession:
    """A command with stdin over a WebSocket: ``send_stdin``, ``close_stdin``,
    ``kill``; ``recv()`` returns frames until the exit frame."""

    def __init__(self, ws: Any):
        self._ws = ws

    async def start(self, body: Dict[str, Any]) -> None:
        await self._ws.send(json.dumps(body))

    async def send_stdin(self, data: Union[bytes, str]) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        await self._ws.send(json.dumps({"type": "stdin", "data": text}))

    async def close_stdin(self) -> None:
        await self._ws.send(json.dumps({"type": "stdin_close"}))

    async def kill(self) -> None:
        await self._ws.send(json.dumps({"type": "kill"}))

    async def recv(self) -> Frame:
        try:
            msg = await self._ws.recv()
        except websockets.ConnectionClosed as e:
            raise WarrenError(f"the exec session closed: {e}", code="internal") from None
        f = _control(msg if isinstance(msg, str) else msg.decode())
        assert f is not None
        return f

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> "AsyncExecSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class LoopThread:
    """An event loop on a daemon thread, for the blocking wrappers."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="warren-ws", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class Pty:
    """The blocking form of AsyncPty."""

    def __init__(self, loop: LoopThread, inner: AsyncPty):
        self._loop, self._inner = loop, inner

    @property
    def exit_code(self) -> Optional[int]:
        return self._inner.exit_code

    def read(self, timeout: Optional[float] = None) -> bytes:
        return self._loop.run(self._inner.read(), timeout)

    def write(self, data: Union[bytes, str]) -> None:
        self._loop.run(self._inner.write(data))

    def resize(self, cols: int, rows: int) -> None:
        self._loop.run(self._inner.resize(cols, rows))

    def close(self) -> None:
        self._loop.run(self._inner.close())

    def __enter__(self) -> "Pty":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ExecSession:
    """The blocking form of AsyncExecSession."""

    def __init__(self, loop: LoopThread, inner: AsyncExecSession):
        self._loop, self._inner = loop, inner

    def send_stdin(self, data: Union[bytes, str]) -> None:
        self._loop.run(self._inner.send_stdin(data))

    def close_stdin(self) -> None:
        self._loop.run(self._inner.close_stdin())

    def kill(self) -> None:
        self._loop.run(self._inner.kill())

    def recv(self, timeout: Optional[float] = None) -> Frame:
        return self._loop.run(self._inner.recv(), timeout)

    def close(self) -> None:
        self._loop.run(self._inner.close())

    def __enter__(self) -> "ExecSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
