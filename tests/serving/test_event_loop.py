"""The serving loop turns TCP_NODELAY on for connections a socket bound by uvicorn accepts (`--workers` > 1)."""

from __future__ import annotations

import asyncio
import importlib.util
import socket

import pytest
from uvicorn.config import Config

from pipelines.serving.event_loop import NoDelayEventLoop, loop_factory


def accepted_nodelay(loop: asyncio.AbstractEventLoop) -> int:
    """TCP_NODELAY of a connection accepted on a listening socket bound the way uvicorn's multi-worker
    supervisor binds it (`Config.bind_socket`) and served by `loop`."""
    listener = Config(app=None, host="127.0.0.1", port=0).bind_socket()
    seen: asyncio.Future = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport):
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main():
        server = await loop.create_server(Accept, sock=listener)
        try:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_socket_bound_by_uvicorn_accepts_connections_without_nodelay_on_asyncio_alone():
    """The upstream bug the serving loop works around (uvicorn #3149): if this starts failing, uvicorn or
    asyncio sets TCP_NODELAY itself and `NoDelayEventLoop` is no longer needed."""
    assert accepted_nodelay(asyncio.SelectorEventLoop()) == 0


def test_the_serving_loop_accepts_connections_with_nodelay():
    assert accepted_nodelay(NoDelayEventLoop()) == 1


def test_the_factory_loop_accepts_connections_with_nodelay():
    """Whichever loop the factory makes here (uvloop, a pinned dependency; asyncio's `NoDelayEventLoop` without it)."""
    assert accepted_nodelay(loop_factory()) == 1


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is not None, reason="uvloop installed: used as uvicorn makes it")
def test_the_factory_makes_the_nodelay_loop_when_uvloop_is_absent():
    loop = loop_factory()
    try:
        assert isinstance(loop, NoDelayEventLoop)
    finally:
        loop.close()
