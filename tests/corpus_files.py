"""Corpora made from the real texts the way users hold theirs: Tiny Shakespeare cut into one file per stretch
of speeches, some in a subfolder."""

from __future__ import annotations

from pathlib import Path


def write_speech_files(shakespeare_text: str, folder: Path, files: int = 12) -> list[Path]:
    """Cut the play text at speech boundaries into ``files`` files (every other one in ``folder/more``);
    returns them in the order a folder source reads them (sorted paths)."""
    speeches = shakespeare_text.split("\n\n")
    per_file = len(speeches) // files
    written = []
    for i in range(files):
        sub = folder / "more" if i % 2 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"speeches_{i:02d}.txt"
        path.write_text("\n\n".join(speeches[i * per_file : (i + 1) * per_file]) + "\n", encoding="utf-8")
        written.append(path)
    return sorted(written)
