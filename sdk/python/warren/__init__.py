"""warren: self-hosted sandboxes for AI agents.

    from warren import Warren

    with Warren() as w, w.create_sandbox(image="base") as sb:
        print(sb.exec("echo hello from $(hostname)").stdout)

``Warren`` blocks; ``AsyncWarren`` is the same for asyncio. Both read
``WARREN_URL`` and ``WARREN_API_KEY`` when not given a URL and key.
"""

from ._async import AsyncSandbox, AsyncWarren
from ._errors import (AuthenticationError, BadRequestError, ConflictError, ForbiddenError, NotFoundError,
                      RateLimitError, StorageFullError, TooLargeError, UnavailableError, WarrenError)
from ._sync import Sandbox, Warren
from ._types import (STATES, Command, ExecResult, FileInfo, Frame, Image, ImageConfig, ImageEvent, Info, Memory, NetworkPolicy,
                     PoolStatus, Port, PortToken, Resources, SandboxInfo)
from ._ws import AsyncExecSession, AsyncPty, ExecSession, Pty

__all__ = [
    "Warren", "Sandbox", "AsyncWarren", "AsyncSandbox", "Pty", "AsyncPty", "ExecSession", "AsyncExecSession",
    "WarrenError", "BadRequestError", "AuthenticationError", "ForbiddenError", "NotFoundError", "ConflictError",
    "TooLargeError", "RateLimitError", "UnavailableError", "StorageFullError",
    "SandboxInfo", "Resources", "Memory", "NetworkPolicy", "Port", "PortToken", "ExecResult", "Frame", "FileInfo",
    "Command", "Image", "ImageConfig", "ImageEvent", "Info", "PoolStatus", "STATES",
]
