"""The terminal consoles every `tipline` sub-command prints with, made in one place.

Piped or captured output is not cut at 80 columns: tables, help and the commands the demo suggests stay
whole (160 columns); one error sentence stays one line.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

# COLUMNS, the terminal's own convention, still wins when set; plain lines are never wrapped.
_width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(stderr=False, width=_width, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
