"""fastgan: fast kernels and workflows for training GANs from little data by transfer.

Importing fastgan never fails because a compiled or Triton part is missing: the compiled extension
``fastgan._C`` is loaded if it can be, and why it could not is recorded in ``fastgan.EXT_ERROR``
(``fastgan doctor`` prints it). Set ``FASTGAN_NO_EXT=1`` to skip loading it.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"

HAS_EXT = False
EXT_ERROR: str | None = None

if os.environ.get("FASTGAN_NO_EXT", "0") == "1":
    EXT_ERROR = "disabled by FASTGAN_NO_EXT=1"
else:
    try:
        import torch  # noqa: F401  (loads libtorch before the extension)

        from . import _C  # type: ignore[attr-defined]

        HAS_EXT = True
    except Exception as exc:  # ImportError, undefined symbols from an ABI mismatch, ...
        import glob as _glob

        if isinstance(exc, ImportError) and not _glob.glob(os.path.join(os.path.dirname(__file__), "_C*.so")):
            EXT_ERROR = (
                f"fastgan._C is not built next to {os.path.dirname(__file__)} (the install did not compile it, or "
                "fastgan is imported from a source tree); build it with "
                "`pip install -e . --no-build-isolation --no-deps`"
            )
        else:
            EXT_ERROR = f"{type(exc).__name__}: {exc}"


def build_info() -> dict:
    """What the compiled extension was built with (empty ``families`` when it is not loaded)."""
    if not HAS_EXT:
        return {"loaded": False, "error": EXT_ERROR, "families": {}}
    info = dict(_C.build_info())
    info["loaded"] = True
    info["families"] = {k: list(v) for k, v in info["families"].items()}
    return info


from . import ops  # noqa: E402  (after _C: the ops register fake/autograd rules on its schemas)

__all__ = ["ops", "build_info", "HAS_EXT", "EXT_ERROR", "__version__"]
