"""matplotlib figures for files and self-contained pages: the data check report, the eval
report and the run's loss curve draw through these two functions."""

from __future__ import annotations

import base64
import io
from typing import Any


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """plt.subplots on the Agg backend: pictures go to files, never to a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def png_data_uri(fig: Any, **savefig: Any) -> str:
    """The figure as a PNG data: URI (an <img> needing no file beside the page); closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", **savefig)
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
