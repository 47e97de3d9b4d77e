"""Training presets shipped with the package (src/activation_oracles/presets/*.yaml)."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    p = PRESET_DIR / f"{name}.yaml"
    if not p.is_file():
        raise ConfigError(
            "config", f"unknown preset {name!r} and no such file; presets: {', '.join(list_presets())}"
        )
    return p
