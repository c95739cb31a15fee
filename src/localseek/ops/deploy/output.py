"""Writes rendered deployment files into a directory (they are regenerated, so overwritten)."""

from __future__ import annotations

from pathlib import Path

from localseek.errors import ConfigError


def write_files(files: dict[str, str], out_dir: str | Path) -> list[Path]:
    """Write every {name: content} under out_dir (created if missing); returns the paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in files.items():
            path = out / name
            path.write_text(content)
            written.append(path)
    except OSError as exc:
        raise ConfigError(f"cannot write into {str(out)!r}: {exc.strerror}") from exc
    return written
