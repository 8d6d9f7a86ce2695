"""Bias-free multilayer perceptron (BFMLP), the building block of CIFM.

A bias-free MLP maps the zero vector to the zero vector: every linear layer
has ``bias=False`` and every activation satisfies ``act(0) == 0``. This is
what lets the void-invariant EGNN layer (CIFM, appendix B.2, eqs. 11-14)
carry an exactly-zero message from or to a void node.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["BiasFreeMLP", "ZERO_PRESERVING_ACTIVATIONS"]

#: Activations accepted by name; each maps 0 to 0 exactly.
ZERO_PRESERVING_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


class BiasFreeMLP(nn.Module):
    r"""Multilayer perceptron without bias terms, so that ``f(0) == 0``.

    ``Linear(bias=False) -> act -> ... -> Linear(bias=False)``, with an
    activation between linear layers (and after the last one only if
    ``act_last``).

    Parameters
    ----------
    in_channels
        Size of the input features.
    hidden_channels
        Width of the hidden layers.
    out_channels
        Size of the output features.
    num_layers
        Number of linear layers (``>= 1``); ``1`` is a single bias-free linear map.
    act
        Name of a zero-preserving activation (one of
        :data:`ZERO_PRESERVING_ACTIVATIONS`: ``"silu"``, ``"relu"``, ``"tanh"``,
        ``"gelu"``, ``"leaky_relu"``).
    act_last
        Also apply the activation after the last linear layer.

    Shapes
    ------
    - input: ``(*, in_channels)``
    - output: ``(*, out_channels)``
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        *,
        num_layers: int = 2,
        act: str = "silu",
        act_last: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("hidden_channels", hidden_channels),
            ("out_channels", out_channels),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if act not in ZERO_PRESERVING_ACTIVATIONS:
            raise ValueError(
                f"act must be one of {sorted(ZERO_PRESERVING_ACTIVATIONS)} "
                f"(activations with act(0) == 0), got {act!r}"
            )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.act_name = act
        self.act_last = act_last

        sizes = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.lins = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.act = ZERO_PRESERVING_ACTIVATIONS[act]()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every linear layer (PyTorch's default Kaiming-uniform)."""
        for lin in self.lins:
            lin.reset_parameters()

    @property
    def last(self) -> nn.Linear:
        """The output linear layer (for custom initialisation)."""
        return self.lins[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP.

        Parameters
        ----------
        x
            ``(*, in_channels)`` input.

        Returns
        -------
        Tensor
            ``(*, out_channels)`` output; exactly zero where ``x`` is zero.
        """
        for i, lin in enumerate(self.lins):
            x = lin(x)
            if i < self.num_layers - 1 or self.act_last:
                x = self.act(x)
        return x

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
            f"{self.out_channels}, num_layers={self.num_layers}, act={self.act_name!r})"
        )

