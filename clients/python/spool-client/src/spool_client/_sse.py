"""A Server-Sent Events parser, per the WHATWG HTML standard ("Parsing an event stream").

Fed bytes as they arrive, in chunks cut anywhere (inside a UTF-8 sequence or between the CR
and LF of a CRLF), it returns the events each chunk completes. Lines end with CRLF, LF or CR;
a blank line dispatches the event; `:` starts a comment; `retry:` sets the reconnection time;
an `id:` holding a NUL is ignored; an event without data is not dispatched; an event cut off by
the end of the stream (and an unterminated last line) is dropped.
"""

from __future__ import annotations

import codecs
from typing import List, Optional

from ._models import Event


class SSEParser:
    def __init__(self, last_event_id: Optional[str] = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._first = True
        self._data: List[str] = []
        self._event_type = ""
        self._id_buffer: Optional[str] = last_event_id
        #: The id to resume from (`Last-Event-ID`): the last id of a *completed* event (a blank
        #: line ends it, with or without data), so an event cut off by a broken connection is
        #: fetched again; it persists across events, as the standard says.
        self.last_event_id: Optional[str] = last_event_id
        #: The reconnection time in milliseconds, once the stream has sent a `retry:` field.
        self.retry_ms: Optional[int] = None

    def feed(self, chunk: bytes) -> List[Event]:
        text = self._decoder.decode(chunk)
        if self._first and text:
            self._first = False
            if text.startswith("\ufeff"):
                text = text[1:]
        self._buffer += text
        return self._lines(final=False)

    def close(self) -> List[Event]:
        """End of stream: an unterminated line and a half-built event are dropped."""
        self._buffer += self._decoder.decode(b"", final=True)
        events = self._lines(final=True)
        self._data = []
        self._event_type = ""
        self._id_buffer = self.last_event_id
        return events

    def _lines(self, final: bool) -> List[Event]:
        events: List[Event] = []
        buffer = self._buffer
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == length and not final:
                    break  # a CR at the very end may be the first half of a CRLF: wait
                end, after = cr, (cr + 2 if cr + 1 < length and buffer[cr + 1] == "\n" else cr + 1)
            else:
                end, after = lf, lf + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        # At the end of the stream an unterminated line is pending data, discarded like the
        # half event it belongs to (a lone trailing CR was handled above as a line end).
        self._buffer = "" if final else buffer[start:]
        return events

    def _line(self, line: str) -> Optional[Event]:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value and all("0" <= c <= "9" for c in value):
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Optional[Event]:
        self.last_event_id = self._id_buffer
        if not self._data:
            self._event_type = ""
            return None
        text = "\n".join(self._data)
        event = Event.build(self.last_event_id or None, self._event_type or "message", text)
        self._data = []
        self._event_type = ""
        return event
