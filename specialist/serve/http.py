"""The server's wire: OpenAI's error shape, and uvicorn's HTTP/1.1 protocol with the timeouts
it lacks.

uvicorn (h11) times out only an idle keep-alive connection. A client that sends its request
head or body a byte at a time (slowloris), or that stops reading a streamed answer, would
otherwise hold its connection (and, for the body, its handler) for as long as it likes.
TimedH11Protocol adds:
- a request deadline: from a request's first byte (or the connection's opening) its head and
  body must arrive within `request_timeout` seconds, else 408 and the connection is closed;
- a send deadline: when the client has not taken any of the answer for `send_timeout` seconds
  (the transport's buffer stays above its high-water mark), the connection is aborted, which
  ends the handler as a disconnect does (a streamed answer's row is cancelled).
It also answers malformed HTTP with a 400 in OpenAI's shape instead of uvicorn's plain text."""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import h11
from pydantic import BaseModel
from uvicorn.protocols.http.h11_impl import H11Protocol


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the server answers: {"error": {"message", "type", "param", "code"}}."""
    error: ErrorDetail


class APIError(Exception):
    """A request the server refuses or cannot answer: raised anywhere, answered as error_body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code)).model_dump()


def raw_error(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for answers written before
    (or instead of) the application's own."""
    body = json.dumps(error_body(message, "invalid_request_error", code=code)).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class TimedH11Protocol(H11Protocol):
    """See the module docstring; `protocol_class` sets the two timeouts."""

    request_timeout: float = 10.0
    send_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # -- the request deadline
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def _watch_request(self) -> None:
        """Armed while a request is awaited or arriving and no keep-alive timer covers the
        wait; never re-armed by more bytes of the same request (trickling does not extend it)."""
        waiting = (self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and self.timeout_keep_alive_task is None
                   and not self.transport.is_closing())
        if waiting and self._request_timer is None:
            self._request_timer = self.loop.call_later(self.request_timeout, self._request_timed_out)
        elif not waiting and self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        started = self.conn.their_state is h11.SEND_BODY or bool(self.conn.trailing_data[0])
        cycle = self.cycle if self.cycle is not None and not self.cycle.response_complete else None
        if started and (cycle is None or not cycle.response_started):
            self.transport.write(raw_error(408, f"the request did not arrive within {self.request_timeout:g} s",
                                           "request_timeout"))
        if cycle is not None:  # the handler waiting for the body sees a disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # -- the send deadline
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timed_out(self) -> None:
        self._send_timer = None
        self.logger.warning("dropping a client that took none of its answer for %g s", self.send_timeout)
        self.transport.abort()  # discards what the client never took; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._request_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._send_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(raw_error(400, msg, "invalid_http"))
        self.transport.close()


def protocol_class(request_timeout: float, send_timeout: float) -> type[TimedH11Protocol]:
    """The protocol class to give uvicorn (`http=`), with these timeouts."""
    return type("TimedH11Protocol", (TimedH11Protocol,),
                {"request_timeout": request_timeout, "send_timeout": send_timeout})
