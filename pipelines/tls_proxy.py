"""A TLS-terminating TCP proxy for servers that have no TLS option of their own (the Dagster webserver).

``python -m pipelines.tls_proxy --listen HOST:PORT --upstream HOST:PORT --certfile server.crt --keyfile server.key``

It accepts TLS (1.2 or newer) on ``--listen`` and forwards the decrypted bytes, both ways, to the
upstream's plain port, which must listen on loopback only (the stack binds it to 127.0.0.1). A
client that speaks plain HTTP to the TLS port fails the handshake and is disconnected; nothing of it
reaches the upstream.

Why bytes and not an HTTP reverse proxy: the webserver's UI keeps WebSocket connections (GraphQL
subscriptions) and streams logs; forwarding the byte stream passes HTTP/1.1, keep-alive, WebSockets
and streaming as they are, with the standard library's ``asyncio`` and ``ssl`` and nothing to parse.
The price: the upstream sees every request from 127.0.0.1 (no client address), which the webserver
does not use. In front of a fleet, use the platform's load balancer or ingress instead (docs/tls.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys

logger = logging.getLogger("tls_proxy")

CHUNK = 64 << 10
HANDSHAKE_TIMEOUT_S = 10.0


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server context for ``certfile`` (and ``keyfile``): TLS 1.2 or newer, the standard library's ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy ``reader`` to ``writer`` until end of stream; whether ``writer`` could be half-closed after it
    (plain TCP can; TLS cannot, so the connection then ends as a whole)."""
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
            return True
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return False


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5)


class TlsProxy:
    """Accepts TLS on ``listen`` and forwards each connection's bytes to ``upstream``."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], context: ssl.SSLContext):
        self.listen, self.upstream, self.context = listen, upstream, context
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Start listening; the port (useful with port 0)."""
        self._server = await asyncio.start_server(self._connection, *self.listen, ssl=self.context,
                                                  ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S, limit=CHUNK)
        return self._server.sockets[0].getsockname()[1]

    async def serve_until(self, stop: asyncio.Event) -> None:
        assert self._server is not None, "start() first"
        async with self._server:
            await stop.wait()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError as error:
            logger.warning("upstream %s:%s unreachable: %s", *self.upstream, error)
            await _close(client_writer)
            return
        pipes = {asyncio.create_task(_pipe(client_reader, upstream_writer)),
                 asyncio.create_task(_pipe(upstream_reader, client_writer))}
        try:
            while pipes:
                done, pipes = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                if not all(task.result() for task in done):
                    break  # the upstream finished or a side failed: nothing more can cross
        finally:
            for task in pipes:
                task.cancel()
            await _close(upstream_writer)
            await _close(client_writer)


async def _serve(args: argparse.Namespace) -> None:
    proxy = TlsProxy(args.listen, args.upstream, server_context(args.certfile, args.keyfile))
    port = await proxy.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info("TLS on %s:%s -> %s:%s", args.listen[0], port, *args.upstream)
    await proxy.serve_until(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tls_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT to accept TLS on")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT of the plain server (loopback)")
    parser.add_argument("--certfile", required=True, help="the server certificate chain (PEM)")
    parser.add_argument("--keyfile", default=None, help="its private key (PEM; omit when the certificate file holds it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except (OSError, ssl.SSLError) as error:
        print(f"tls_proxy: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
