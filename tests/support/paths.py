from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# CI clones the repo anywhere with the reference kit beside it as ../shared.
KIT = REPO.parent / "shared"
DATA = KIT / "data"
TIKTOKEN_DIR = KIT / "tiktoken"
HUATUO = DATA / "huatuo_style_sample.jsonl"
