"""A third-party adapter as ``pip install`` leaves one: a package plus a ``*.dist-info`` whose
``entry_points.txt`` registers adapter ``pigeon`` (channel ``pigeon``, one required option ``loft``).
Put the directory on ``sys.path`` (or ``PYTHONPATH`` for a subprocess) and Chimeway discovers it."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path


def write_pigeon_distribution(directory: Path) -> str:
    """Write the distribution into ``directory``; returns its (unique) package name."""
    package = f"chimeway_pigeon_{uuid.uuid4().hex[:8]}"
    (directory / package).mkdir()
    (directory / package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            """A carrier-pigeon adapter, as a third party would write it: only the contract is imported."""
            from chimeway.adapter import Adapter, Option, PermanentError, SendResult

            SENT = []


            class PigeonAdapter(Adapter):
                name = "pigeon"
                channel = "pigeon"
                options = {"loft": Option(required=True, secret=True, doc="expected the loft name")}

                def send(self, request):
                    if not request.payload.get("note"):
                        raise PermanentError("a pigeon needs a note")
                    SENT.append((self.config["loft"], request.recipient, dict(request.payload)))
                    return SendResult(provider="pigeon", provider_message_id=f"leg-band-{len(SENT)}")
            '''
        )
    )
    dist_info = directory / "chimeway_pigeon-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: chimeway-pigeon\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[chimeway.adapters]\npigeon = {package}:PigeonAdapter\n")
    return package
