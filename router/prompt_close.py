"""Close a keep-alive connection as soon as its client closes it.

Hypercorn 0.18's asyncio `TCPServer` stops reading at the client's FIN but only
closes the socket once every task of the connection is done, and one of them is
the keep-alive timer: an idle connection the client has left sits in CLOSE-WAIT
for the whole `keep_alive_timeout` (75 s here), holding a file descriptor. A
churn of short-lived clients then runs the process out of descriptors.

Nothing can arrive after the FIN, so the timer is stopped there; requests still
running on the connection finish (or see their disconnect) and Hypercorn then
closes the socket as usual.
"""

from __future__ import annotations

import hypercorn.asyncio.run
from hypercorn.asyncio.tcp_server import TCPServer


class PromptCloseTCPServer(TCPServer):
    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()

    async def _idle_timeout(self) -> None:
        # The protocol may restart the timer after the FIN (a request finishing
        # on a half-closed connection); do not wait out keep_alive_timeout then.
        if self.reader.at_eof():
            await self._initiate_server_close()
            return
        await super()._idle_timeout()


def install() -> None:
    """Make `hypercorn.asyncio.serve` use PromptCloseTCPServer for its connections."""
    # worker_serve builds each connection's TCPServer by this module-level name.
    hypercorn.asyncio.run.TCPServer = PromptCloseTCPServer  # type: ignore[attr-defined]
