"""PNG output shared by the benchmark scripts: headless matplotlib, one place to save."""

from pathlib import Path


def subplots(*args, **kwargs):
    """matplotlib's plt.subplots on the headless Agg backend (imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_png(fig, path: Path) -> None:
    """Write the figure and close it (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
