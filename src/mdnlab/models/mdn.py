"""The Mixture Density Network (Bishop, PRML §5.6), alone or as a deep ensemble."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mdnlab.errors import ConfigError, choice, integer, number
from mdnlab.mixtures import Mixture, mixture, mvmixture
from mdnlab.models.base import Regressor, plain
from mdnlab.models.layers import MemberLinear, mlp_trunk

SIGMA_TRANSFORMS = ("exp", "softplus")
COVARIANCES = ("diag", "full")
# Scoring costs O(K²) per test point (CRPS, mean-shift modes), K = n_gaussians × n_members, in
# chunks of points; past this, one point's pairwise terms alone outgrow a laptop's memory.
MAX_COMPONENTS = 4096


class MixtureDensityNetwork(Regressor):
    """p(t|x) = Σ_k π_k(x) N(t; μ_k(x), Σ_k(x)) with π = softmax(z_π), μ = z_μ and, for one
    target, σ = exp(z_σ) (the seed's) or softplus(z_σ), plus ``min_sigma`` (standardised units),
    where (z_π, z_σ, z_μ) come from one linear head on a shared MLP trunk. Trained by the
    mixture NLL of ``mdnlab.mixtures.mixture`` (one target) or ``mdnlab.mixtures.mvmixture`` (D > 1).

    With D > 1 targets, ``covariance`` picks the components' shape: ``diag`` (Σ_k = diag(σ_k²),
    D σ outputs per component, Bishop 1994) or ``full`` (Σ_k = L_k L_kᵀ with a Cholesky factor
    whose diagonal goes through the σ transform and whose D(D−1)/2 entries below it are free).

    ``n_members > 1`` makes it a deep ensemble (Lakshminarayanan et al., 2017): M such networks
    from independent initialisations, each trained on its own NLL (the training loss is their
    mean, logged as train/member_nll), predicting together as the equal-weight mixture of their
    mixtures (whose NLL is val/nll and test/nll),

        p(t|x) = (1/M) Σ_m Σ_k π_mk(x) N(t; μ_mk(x), Σ_mk(x)),

    itself a Gaussian mixture of M·K components, so every metric and figure applies unchanged.
    The members run as one batched matmul per layer.

    ``adversarial = ε > 0`` adds the paper's adversarial training (its §2.3, the fast gradient
    sign method): each step also scores each member at inputs moved against it,

        x' = x + ε · range(x) · sign(∇_x ℓ(θ, x, t)),

    where range(x) is each input's range over the training split (ε = 0.01 in the paper) and
    ℓ the member's NLL, and minimises the mean (ℓ(θ, x, t) + ℓ(θ, x', t)) / 2 (the paper's sum,
    halved, so train/nll stays on the NLL's scale; Adam's steps do not depend on the scale).
    Each member gets its own x'. A step costs about two plain steps (a second forward and
    backward, and a gradient with respect to the inputs).

    With a box B (``set_truncation``; the data module's ``target_box``, an sbibm prior with
    ``data.support=truncate``), the density is the mixture truncated to it, trained and validated
    as such (an ensemble: each member its own truncated NLL; the prediction, their mixture
    truncated as a whole):

        −log q(t | x, B) = −log p(t | x) + log P_p(B | x),   P_p(B | x) = ∫_B p(t | x) dt,

    in closed form for diagonal covariance (``mvmixture.log_box_mass``); ``predictive_mixture``
    stays the untruncated mixture, which the caller restricts to B (``eval.posterior``).
    """

    metric = "nll"

    def __init__(
        self,
        input_dim: int = 1,
        target_dim: int = 1,
        n_gaussians: int = 5,
        hidden_size: int = 20,
        n_hidden_layers: int = 1,
        activation: str = "tanh",
        sigma_transform: str = "exp",
        min_sigma: float = 0.0,
        covariance: str = "diag",
        n_members: int = 1,
        adversarial: float = 0.0,
        optimizer=None,
        scheduler=None,
    ) -> None:
        super().__init__(input_dim, target_dim, hidden_size, n_hidden_layers, activation, optimizer)
        integer("model.n_gaussians", n_gaussians, 1)
        integer("model.n_members", n_members, 1)
        if n_gaussians * n_members > MAX_COMPONENTS:
            raise ConfigError(
                "model.n_gaussians",
                n_gaussians,
                f"at most {MAX_COMPONENTS // n_members} with "
                f"n_members={n_members} (scoring costs K² per point, K = n_gaussians × "
                f"n_members ≤ {MAX_COMPONENTS})",
            )
        choice("model.sigma_transform", sigma_transform, SIGMA_TRANSFORMS)
        choice("model.covariance", covariance, COVARIANCES)
        number("model.min_sigma", min_sigma, "a finite number ≥ 0", lambda v: v >= 0)
        number("model.adversarial", adversarial, "a number in [0, 1) (0: off; the paper's 0.01)", lambda v: 0 <= v < 1)
        optimizer, scheduler = plain(optimizer), plain(scheduler)  # read by save_hyperparameters
        self.save_hyperparameters(logger=False)
        self.n_gaussians, self.min_sigma, self.n_members = n_gaussians, min_sigma, n_members
        self.adversarial = float(adversarial)
        # each input's training range, standardised (set in setup); not saved: only training reads it
        self.register_buffer("input_range", torch.ones(input_dim), persistent=False)
        # the box (2, D) the density is truncated to, standardised (set_truncation); None: none
        self.truncation: Tensor | None
        self.register_buffer("truncation", None, persistent=False)
        self.full_covariance = covariance == "full" and target_dim > 1
        self._sigma = torch.exp if sigma_transform == "exp" else nn.functional.softplus
        k, d = n_gaussians, target_dim
        # one matmul for all heads: logits K, μ K·D, σ K·D, then K·D(D−1)/2 Cholesky entries
        self._sizes = [k, k * d, k * d] + ([k * d * (d - 1) // 2] if self.full_covariance else [])
        self.trunk = mlp_trunk(input_dim, hidden_size, n_hidden_layers, activation, members=n_members)
        self.head = (
            nn.Linear(hidden_size, sum(self._sizes))
            if n_members == 1
            else MemberLinear(n_members, hidden_size, sum(self._sizes))
        )

    @property
    def training_metric(self) -> str:
        return "nll" if self.n_members == 1 else "member_nll"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if stage == "fit" and datamodule is not None:
            self.input_range.copy_(datamodule.input_range())
            self.set_truncation(datamodule.target_box())

    def set_truncation(self, box: Tensor | None) -> None:
        """Train and validate on the density truncated to ``box`` (2, D) (low, high; standardised
        units), or untruncated (None)."""
        if box is not None:
            self.check_truncation()
        self.truncation = None if box is None else box.to(self.input_mean)

    def check_truncation(self) -> None:
        """ConfigError unless this model can train truncated: diagonal covariance."""
        if self.full_covariance:
            raise ConfigError(
                "model.covariance",
                "full",
                "diag with data.support=truncate (a box's mass under a full-covariance Gaussian has no closed form)",
            )

    def _per_member(self, x: Tensor) -> Tensor:
        """Inputs (N, D) as (M, N, D) for an ensemble, one copy per member (unchanged if they
        already have the member axis, or for one model)."""
        if self.n_members == 1 or x.dim() == 3:
            return x
        return x.unsqueeze(0).expand(self.n_members, *x.shape)

    def member_parameters(self, x: Tensor) -> Mixture:
        """Each member's mixture in standardised units, with a leading member axis M for an
        ensemble: logits (M, N, K), μ (M, N, K[, D]), scale (M, N, K[, D[, D]]). ``x`` is (N, D)
        or, for an ensemble, (M, N, D): each member its own inputs."""
        x = self._per_member(x)
        logits, mu, sigma_raw, *lower = self.head(self.trunk(x)).split(self._sizes, dim=-1)
        sigma = self._sigma(sigma_raw) + self.min_sigma
        if self.target_dim == 1:
            return Mixture(logits, mu, sigma)
        batch, k, d = logits.shape[:-1], self.n_gaussians, self.target_dim
        mu, sigma = mu.reshape(*batch, k, d), sigma.reshape(*batch, k, d)
        if not self.full_covariance:
            return Mixture(logits, mu, sigma)
        rows, cols = torch.tril_indices(d, d, -1, device=x.device)
        below = sigma.new_zeros(*batch, k, d, d)
        below[..., rows, cols] = lower[0].reshape(*batch, k, -1)
        return Mixture(logits, mu, below + torch.diag_embed(sigma))

    def forward(self, x: Tensor) -> Mixture:
        """The predictive mixture in standardised units, M·K components."""
        logits, mu, scale = self.member_parameters(x)
        if self.n_members == 1:
            return Mixture(logits, mu, scale)
        # equal member weights: log π_mk = log_softmax_k(z_m)_k − log M
        logits = torch.log_softmax(logits, -1) - math.log(self.n_members)
        n = x.shape[0]
        return Mixture(*(p.transpose(0, 1).reshape(n, -1, *p.shape[3:]) for p in (logits, mu, scale)))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The predictive mixture's NLL (standardised units): what val/nll reports."""
        if self.n_members == 1:
            return self.training_loss(x, y)
        mixture = self(x)
        log_p = mixture.log_prob(y)
        if self.truncation is not None:
            log_p = log_p - mixture.log_box_mass(*self.truncation)
        return -log_p.mean()

    def training_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Each member's own NLL, averaged over members (for one model, the NLL itself); with
        ``adversarial``, averaged with the NLL at each member's adversarial inputs."""
        if not self.adversarial:
            return self._members_nll(x, y)
        x = self._per_member(x).detach().requires_grad_(True)
        clean = self._members_nll(x, y)
        # the sign of each member's own gradient: its NLL is the only term that reads its copy
        (gradient,) = torch.autograd.grad(clean, x, retain_graph=True)
        moved = x.detach() + self.adversarial * self.input_range * gradient.sign()
        return (clean + self._members_nll(moved, y)) / 2

    def _members_nll(self, x: Tensor, y: Tensor) -> Tensor:
        if self.target_dim == 1 and self.truncation is None:
            return self._component_major_nll(x, y)
        members = y if self.n_members == 1 else y.unsqueeze(0).expand(self.n_members, *y.shape)
        mixture = self.member_parameters(x)
        if self.truncation is None:
            return mvmixture.nll(*mixture, members)
        return -(mixture.log_prob(members) - mixture.log_box_mass(*self.truncation)).mean()

    def _component_major_nll(self, x: Tensor, y: Tensor) -> Tensor:
        """One target: ``training_loss`` with the head computed straight into a (M, 3K, N)
        layout: see ``mixture.nll_component_major`` for why (the per-step cost)."""
        if self.n_members == 1:
            out = torch.addmm(self.head.bias.unsqueeze(1), self.head.weight, self.trunk(x).t())
        else:
            features = self.trunk(self._per_member(x))  # (M, N, H)
            out = torch.baddbmm(
                self.head.bias.transpose(1, 2), self.head.weight.transpose(1, 2), features.transpose(1, 2)
            )
        logits, mu, sigma_raw = out.split(self._sizes, dim=-2)
        if self._sigma is torch.exp and not self.min_sigma:
            log_sigma = sigma_raw
        else:
            log_sigma = torch.log(self._sigma(sigma_raw) + self.min_sigma)
        return mixture.nll_component_major(logits, mu, log_sigma, y.reshape(1, -1))

    def to_original_units(self, value: Tensor) -> Tensor:
        # NLL in original units = standardised NLL + log|dt_std/dt| = + Σ_d log(target_std_d).
        return value + torch.log(self.target_std).sum()

    @torch.no_grad()
    def predictive_mixture(self, inputs: Tensor) -> Mixture:
        """The predictive mixture in original units."""
        return self(self.standardize_inputs(inputs)).in_units(self.target_mean, self.target_std)
