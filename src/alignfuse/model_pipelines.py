"""Registered network pipelines (UMF-CMGR, RFVIF). Imported by the registry on first use.

Each factory loads shipped safetensors weights from ``alignfuse/weights`` with their JSON sidecar.
Networks are added here as their weights ship.
"""

from __future__ import annotations
