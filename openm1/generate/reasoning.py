"""Split an answer's ``<think>...</think>`` part from its content, also when it arrives in pieces.

M1 writes its reasoning between ``<think>`` and ``</think>`` (several tokens each, so a tag can be cut
across stream deltas); the server returns it as ``reasoning_content``. A chat template that already
opens ``<think>`` in the prompt makes the answer start inside the reasoning: ``start_in_reasoning``.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ReasoningSplitter:
    def __init__(self, start_in_reasoning: bool = False) -> None:
        self.in_reasoning = start_in_reasoning
        self._buf = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        """Pieces ``("reasoning" | "content", text)`` that are safe to emit now."""
        self._buf += text
        out: list[tuple[str, str]] = []
        while self._buf:
            tag = CLOSE if self.in_reasoning else OPEN
            i = self._buf.find(tag)
            if i >= 0:
                self._emit(out, self._buf[:i])
                self._buf = self._buf[i + len(tag) :]
                self.in_reasoning = not self.in_reasoning
                continue
            keep = _partial_suffix(self._buf, tag)  # a tag may be starting at the end: hold it back
            self._emit(out, self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, self._buf)
        self._buf = ""
        return out

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if text:
            out.append(("reasoning" if self.in_reasoning else "content", text))


def _partial_suffix(text: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def split_reasoning(text: str, start_in_reasoning: bool = False) -> tuple[str | None, str]:
    """(reasoning or None, content) of a whole answer."""
    s = ReasoningSplitter(start_in_reasoning)
    parts = s.feed(text) + s.flush()
    reasoning = "".join(t for k, t in parts if k == "reasoning")
    content = "".join(t for k, t in parts if k == "content")
    return (reasoning if reasoning or OPEN in text or start_in_reasoning else None), content
