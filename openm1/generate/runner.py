"""The engine's scheduler loop on a background thread, fed by a request queue, for the async server.

Callers on an asyncio loop ``submit`` a prompt and receive an ``asyncio.Queue`` of
:class:`~openm1.generate.engine.TokenEvent` (or one exception, if the engine refused the request);
the thread admits every waiting submission before each ``step()``, so concurrent requests share the
batch. Only this thread touches the engine.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import traceback

from openm1.generate.engine import Engine, TokenEvent
from openm1.generate.sampling import SamplingParams


class EngineRunner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inbox: queue.Queue = queue.Queue()
        self._outputs: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openm1-engine", daemon=True)
        self._counter = 0
        self._lock = threading.Lock()

    def start(self) -> EngineRunner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout=10)

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> tuple[str, asyncio.Queue]:
        """Queue a request (call from the event loop); events arrive on the returned queue."""
        with self._lock:
            self._counter += 1
            request_id = f"r{self._counter}"
        out: asyncio.Queue = asyncio.Queue()
        self._outputs[request_id] = (asyncio.get_running_loop(), out)
        self._inbox.put(("add", request_id, prompt_ids, params))
        return request_id, out

    def abort(self, request_id: str) -> None:
        """Drop a request whose client went away (its cache row is freed on the next loop turn)."""
        self._inbox.put(("abort", request_id))

    # ------------------------------------------------------------------ the thread
    def _deliver(self, request_id: str, item: TokenEvent | BaseException, last: bool) -> None:
        target = self._outputs.get(request_id)
        if target is None:
            return
        loop, out = target
        if last:
            self._outputs.pop(request_id, None)
        try:
            loop.call_soon_threadsafe(out.put_nowait, item)
        except RuntimeError:  # the client's loop is closed
            pass

    def _drain(self, block: bool) -> None:
        try:
            msg = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while msg is not None:
            if msg[0] == "add":
                _, request_id, prompt_ids, params = msg
                try:
                    self.engine.add_request(prompt_ids, params, request_id=request_id)
                except ValueError as e:
                    self._deliver(request_id, e, last=True)
            elif msg[0] == "abort":
                self.engine.abort(msg[1])
                self._outputs.pop(msg[1], None)
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain(block=not self.engine.has_work())
            if not self.engine.has_work():
                continue
            try:
                events = self.engine.step()
            except Exception as e:  # noqa: BLE001 - fail the requests in flight, keep serving
                traceback.print_exc()
                for rid in list(self.engine.running) + [r.request_id for r in self.engine.waiting]:
                    self.engine.abort(rid)
                    self._deliver(rid, RuntimeError(f"generation failed: {type(e).__name__}: {e}"), last=True)
                continue
            for ev in events:
                self._deliver(ev.request_id, ev, last=ev.finished)
                if ev.finished:
                    self.engine.take_result(ev.request_id)
