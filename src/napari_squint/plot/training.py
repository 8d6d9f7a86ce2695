"""Training curves."""

from __future__ import annotations


def plot_history(history: list[dict]):
    """Loss terms and codebook utilisation per epoch; returns the figure."""
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for key in ("nb_loss", "adj_loss"):
        if key in history[0]:
            axes[0].plot(ep, [h[key] for h in history], label=key)
    axes[0].set_title("reconstruction")
    axes[0].legend()
    axes[1].plot(ep, [h["commit_loss"] for h in history], label="commitment")
    axes[1].set_title("VQ")
    axes[2].plot(ep, [h["utilisation"] for h in history], label="utilisation")
    axes[2].set_ylim(0, 1.05)
    ax2 = axes[2].twinx()
    ax2.plot(ep, [h["epoch_perplexity"] for h in history], color="C1", label="perplexity")
    axes[2].set_title("codebook (per head)")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig
