"""Appends one complete incident snapshot per line, on every change (the DESIGN contract)."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TextIO

from otel_ai.model import Incident


class JsonlExporter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: TextIO | None = None

    def export(self, incident: Incident) -> None:
        line = json.dumps(incident.snapshot(), separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is None:
                # Opened on first use so that a run with no incidents leaves no empty file.
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(line)
            # Flushed per line: tailing readers and a crash both see every complete change.
            self._file.flush()

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
