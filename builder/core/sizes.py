"""Byte counts as people read them (1.2 KB, 181.8 MB): one spelling for every command's output."""
from __future__ import annotations


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
