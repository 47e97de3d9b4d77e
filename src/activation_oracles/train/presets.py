"""Training presets shipped with the package (src/activation_oracles/presets/*.yaml)."""

from __future__ import annotations

from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_file(name: str) -> Path | None:
    """The YAML of a packaged preset, or None when there is no preset of that name."""
    p = PRESET_DIR / f"{name}.yaml"
    return p if p.is_file() else None
